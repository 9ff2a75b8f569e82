package seeder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/placement"
)

// DefaultReplicas is how many seeders seed each community unless
// Config.Replicas says otherwise: one may die and members still find a
// copy while the placement moves it.
const DefaultReplicas placement.Factor = 2

// DefaultHeartbeatEvery is how often a seeder renews its membership, a
// third of the membership's lifetime.
const DefaultHeartbeatEvery = bus.SeederTTL / 3

// errHandOff keeps a community this seeder no longer owns pending until its
// new owners serve it (make-before-break); it is waiting, not failing.
var errHandOff = errors.New("new owners not serving yet")

// members is the live seeders as this one sees them, itself included even
// when its heartbeat has lapsed (it still serves what it holds).
func (s *Service) members() []placement.Member {
	ms := s.view.Members()
	for _, m := range ms {
		if m.ID == s.self.ID {
			return ms
		}
	}
	return append(ms, s.self)
}

// owns reports whether this seeder is among c's owners, and the owners.
func (s *Service) owns(c string) (bool, []placement.Member) {
	owners := placement.Owners(c, s.members(), s.Config.Replicas)
	for _, m := range owners {
		if m.ID == s.self.ID {
			return true, owners
		}
	}
	return false, owners
}

// joinPlacement makes the seeder a member and starts following the others.
// It returns the function that stops the heartbeat (the entry then
// expires: a restart within its TTL keeps this seeder's communities).
func (s *Service) joinPlacement(ctx context.Context) (stopHeartbeat func(), err error) {
	members, serving, err := s.Bus.SeederBuckets(ctx)
	if err != nil {
		return nil, err
	}
	s.serving = placement.Serving{KV: serving}
	s.self = placement.Member{ID: placement.Key(s.Config.ID), Addr: s.Config.PublicAddr, Factor: s.Config.Replicas, Since: time.Now().UTC()}
	stop, err := placement.Heartbeat(ctx, members, s.self, s.Config.HeartbeatEvery, s.Logger)
	if err != nil {
		return nil, err
	}
	if s.view, err = placement.Watch(ctx, members, s.Logger); err != nil {
		stop()
		return nil, err
	}
	s.Logger.Info("joined the seeders", "id", s.self.ID, "replicas", s.Config.Replicas.String(), "members", len(s.members()))
	go func() {
		// Records of a previous life do not count (they name another
		// incarnation); removing them keeps the bucket to what is served.
		if n, err := s.serving.ClearStale(ctx, s.self); err != nil {
			s.Logger.Debug("stale serving records not cleared", "err", err)
		} else if n > 0 {
			s.Logger.Info("cleared serving records of this seeder's previous run", "records", n)
		}
	}()
	return stop, nil
}

// handOver drops c, which this seeder no longer owns, once every owner
// serves its current torrent (infohash ih); until then it returns
// errHandOff and keeps serving.
func (s *Service) handOver(ctx context.Context, c, ih string, owners []placement.Member) error {
	for _, o := range owners {
		got, err := s.serving.Get(ctx, c, o)
		if err != nil {
			return fmt.Errorf("read %s's serving record: %w", o.ID, err)
		}
		if got != ih {
			return errHandOff
		}
	}
	s.drop(c, "placed on other seeders, which serve it now")
	s.removeFiles(c)
	if err := s.serving.Clear(ctx, c, s.self.ID); err != nil {
		s.Logger.Warn("serving record not cleared; it is ignored once this seeder leaves", "community", c, "err", err)
	}
	s.metrics.handoffs.WithLabelValues("out").Inc()
	return nil
}

// removeFiles deletes a community's seeded files once nothing serves them.
func (s *Service) removeFiles(c string) {
	if err := os.RemoveAll(filepath.Join(s.Config.DataDir, c)); err != nil {
		s.Logger.Warn("seeded files of a handed-off community not removed", "community", c, "err", err)
	}
	s.marks().Remove(c)
}

// unowned handles community c this seeder does not own: it hands over
// what it serves, and removes files a restart left behind.
// ih is the community's committed torrent, the one new owners must serve.
func (s *Service) unowned(ctx context.Context, c, ih string, owners []placement.Member) error {
	s.mu.Lock()
	cur := s.seeding[c]
	s.mu.Unlock()
	if cur != nil {
		return s.handOver(ctx, c, ih, owners)
	}
	if _, err := os.Stat(filepath.Join(s.Config.DataDir, c)); err == nil {
		s.drop(c, "placed on other seeders") // its superseded torrents, if any
		s.removeFiles(c)
		s.Logger.Info("removed files of a community placed on other seeders", "community", c)
	}
	return nil
}

// gained counts a community this seeder starts serving that another live
// seeder already serves: a hand-off in.
func (s *Service) gained(ctx context.Context, c string) {
	for _, m := range s.members() {
		if m.ID == s.self.ID {
			continue
		}
		if ih, err := s.serving.Get(ctx, c, m); err == nil && ih != "" {
			s.metrics.handoffs.WithLabelValues("in").Inc()
			return
		}
	}
}
