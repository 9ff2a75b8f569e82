package announcer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// Transport delivers announcements: NATS (which the Waku edge,
// internal/wakuedge, takes to the Waku network) and a webhook.
type Transport interface {
	Send(ctx context.Context, a *bus.Announcement) error
}

// NATSTransport publishes the message bytes on archive.announced.<community>.
type NATSTransport struct{ Bus *bus.Bus }

// Send implements Transport.
func (t NATSTransport) Send(ctx context.Context, a *bus.Announcement) error {
	_, err := t.Bus.PublishMsg(ctx, a.Msg(), a.MsgID())
	return err
}

// Webhook POSTs the announcement as JSON.
type Webhook struct {
	URL    string
	Client *http.Client
}

// Send implements Transport.
func (w Webhook) Send(ctx context.Context, a *bus.Announcement) error {
	b, _ := json.Marshal(a)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Service is the announcer.
type Service struct {
	Bus      *bus.Bus
	Registry *registry.Registry
	// Keys holds the signing keys: the announcer is the one service that
	// reads them.
	Keys       *registry.Keys
	State      *state.Store
	Transports []Transport
	// Slots is how many events are handled at once; 0 means DefaultSlots.
	Slots int
	// Seeders gives the public addresses of the seeders a community is
	// placed on, for x.pe; nil follows the seeders' membership on Bus.
	Seeders Seeders
	Logger  *slog.Logger
	// Now is the clock source (ms); tests may pin it.
	Now     func() time.Time
	metrics *prometheus.CounterVec
	worker  *bus.WorkerMetrics
	// legacyWarned: communities whose key still in the registry was
	// reported once.
	legacyWarned *sync.Map
}

// DefaultSlots is how many events the announcer handles at once.
const DefaultSlots = 2

// New builds the announcer and registers its metrics.
func New(s Service, reg prometheus.Registerer) *Service {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	s.Slots = cmp.Or(s.Slots, DefaultSlots)
	s.metrics = promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_announcements_total",
		Help: "Magnet-link announcements by reason (seeded, republish) and result."}, []string{"reason", "result"})
	s.worker = bus.NewWorkerMetrics(reg)
	s.legacyWarned = &sync.Map{}
	return &s
}

// Seeders is where a community is seeded (*placement.View is one).
type Seeders interface {
	Addrs(community string) []string
}

// Run consumes seeding-started and republish events until ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	if s.Slots < 0 {
		return fmt.Errorf("announcer: %d slots", s.Slots)
	}
	if s.Seeders == nil {
		members, _, err := s.Bus.SeederBuckets(ctx)
		if err != nil {
			return err
		}
		if s.Seeders, err = placement.Watch(ctx, members, s.Logger); err != nil {
			return err
		}
	}
	s.Logger.Info("announcer started", "transports", len(s.Transports))
	return bus.KindSeeding.Work(ctx, s.Bus, bus.Workers{Slots: s.Slots, Logger: s.Logger, Metrics: s.worker}, s.handle)
}

// handle takes a seeding or republish event (republish events carry only the
// community, a subset of SeedingEvent). Waiting (NATS unreachable, a claim
// lost to a concurrent event) snoozes; a malformed event or community
// dead-letters at once; a transport that fails counts toward MAX_DELIVER.
func (s *Service) handle(ctx context.Context, ev bus.SeedingEvent, d bus.Delivery) error {
	id, err := archive.ParseCommunityID(ev.Community)
	if err != nil {
		return fmt.Errorf("%w: %w", bus.ErrMalformed, err)
	}
	reason := "seeded"
	if strings.HasPrefix(d.Subject, bus.SubjectRepublish("")) {
		reason = "republish"
	}
	err = s.announce(ctx, id, reason, ev.InfoHash, ev.Peer)
	var snooze *bus.SnoozeError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errSkip):
		s.metrics.WithLabelValues(reason, "skipped").Inc()
		return nil
	case errors.Is(err, state.ErrConflict):
		// Lost the clock claim to a concurrent event: the next try sees it.
		s.metrics.WithLabelValues(reason, "conflict").Inc()
		return bus.SnoozeFor(conflictSnooze, err.Error())
	case ctx.Err() != nil && !bus.IsPermanent(err):
		return bus.Snooze(0, "announcer shutting down")
	case errors.As(err, &snooze):
		return err
	default:
		s.metrics.WithLabelValues(reason, "failed").Inc()
		s.Logger.Warn("announce failed", "community", ev.Community, "err", err)
		return err
	}
}

// conflictSnooze is how long an event that lost the clock claim to a
// concurrent one waits before it looks again: 100–200 ms.
const conflictSnooze = 200 * time.Millisecond

var errSkip = errors.New("nothing to announce")

func (s *Service) announce(ctx context.Context, id archive.CommunityID, reason, infoHash, peer string) error {
	c := id.String()
	com, err := s.Registry.Get(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return errSkip
	}
	if err != nil {
		return bus.Unavailable("registry read", err)
	}
	if com.Disabled {
		return errSkip
	}
	st, _, err := s.State.GetBuild(ctx, c)
	if err != nil {
		return bus.Unavailable("state read", err)
	}
	if st.InfoHash == "" || (reason == "seeded" && st.InfoHash != infoHash) {
		return errSkip // nothing built yet, or a superseded torrent
	}
	prev, rev, err := s.State.GetAnnounce(ctx, c)
	if err != nil {
		return bus.Unavailable("announce state read", err)
	}
	var claim *state.Announce
	switch {
	case prev.InfoHash == st.InfoHash && !prev.Sent:
		claim = prev // claimed by an attempt that did not finish: resend the same message
	case reason == "seeded" && prev.InfoHash == st.InfoHash:
		return errSkip // another seeder's event for the same torrent
	default:
		// x.pe: every seeder the community is placed on, and the one
		// whose event this is.
		var peers []string
		if s.Seeders != nil {
			peers = s.Seeders.Addrs(c)
		}
		if peer != "" {
			peers = append(peers, peer)
		}
		magnet := st.Magnet
		if reason == "republish" && prev.InfoHash == st.InfoHash && len(peers) == 0 {
			magnet = prev.Magnet // the same link again, with a new clock
		} else if len(peers) > 0 {
			if magnet, err = WithPeers(magnet, peers...); err != nil {
				return bus.Permanent(fmt.Errorf("magnet with peers %q: %w", peers, err))
			}
		}
		// Claim the clock before sending, so that concurrent events for the
		// same torrent send one message, not one each.
		claim = &state.Announce{Clock: max(uint64(s.Now().UnixMilli()), prev.Clock+1), InfoHash: st.InfoHash, Magnet: magnet, At: s.Now().UTC()}
		if rev, err = s.State.Put(ctx, state.AnnounceKey(c), claim, rev); err != nil {
			if errors.Is(err, state.ErrConflict) {
				return err // lost to a concurrent claim: the next try sees it
			}
			return bus.Unavailable("announce claim", err)
		}
	}
	key, err := s.signingKey(ctx, com)
	if err != nil {
		return err
	}
	msg, err := BuildMessage(key, claim.Clock, claim.Magnet)
	if err != nil {
		return bus.Permanent(fmt.Errorf("sign announcement: %w", err))
	}
	a := &bus.Announcement{Community: c, Clock: claim.Clock, Magnet: claim.Magnet, InfoHash: claim.InfoHash, Message: msg, ChatID: wakuwire.MagnetlinksChatID(c)}
	for _, t := range s.Transports {
		if err := t.Send(ctx, a); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	done := *claim
	done.Sent = true
	if _, err := s.State.Put(ctx, state.AnnounceKey(c), &done, rev); err != nil && !errors.Is(err, state.ErrConflict) {
		// Sent but not marked: the next try resends the same message.
		return bus.Unavailable("announce state write", err)
	}
	clock := claim.Clock
	s.metrics.WithLabelValues(reason, "sent").Inc()
	s.Logger.Info("magnet link announced", "community", c, "clock", clock, "infohash", st.InfoHash, "reason", reason)
	return nil
}

// signingKey reads com's key from the keys bucket. A community registered
// by an earlier version may still carry it in the registry, until archivectl
// setup moves it: that key is used, and the operator told once.
func (s *Service) signingKey(ctx context.Context, com *registry.Community) ([]byte, error) {
	key, err := s.Keys.Get(ctx, com.ID)
	switch {
	case err == nil:
		return key, nil
	case errors.Is(err, registry.ErrNoKey) && len(com.LegacySigningKey) > 0:
		if id, err := registry.KeyID(com.LegacySigningKey); err != nil || id != com.ID {
			return nil, bus.Permanent(fmt.Errorf("%w: the signing key stored in the registry is not the community's", registry.ErrCorrupt))
		}
		if _, warned := s.legacyWarned.LoadOrStore(com.ID, true); !warned {
			s.Logger.Warn("the community's signing key is still in the registry bucket, which every process can read: run `archivectl setup` to move it",
				"community", com.ID.String())
		}
		return com.LegacySigningKey, nil
	case errors.Is(err, registry.ErrNoKey):
		// Fails (not a snooze): MAX_DELIVER failures dead-letter the event,
		// and the next republish tries again.
		return nil, fmt.Errorf("%w: register it with archivectl community add -update -private-key-file FILE", err)
	default:
		return nil, bus.Unavailable("signing key read", err)
	}
}
