package seeder

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// Swarm is the fleet tracker's peer registry (*tracker.Registry): the
// seeder lists itself there for every torrent it seeds, so the tracker
// answers members with every seeder, whichever replica they ask.
type Swarm interface {
	Register(ctx context.Context, ih [20]byte, id string, addr netip.AddrPort, seeder bool) error
	Remove(ctx context.Context, ih [20]byte, id string) error
}

// DefaultSwarmEvery is how often the seeder refreshes its swarm entries:
// the tracker's announce interval, well inside the entries' lifetime.
const DefaultSwarmEvery = 10 * time.Minute

// swarmID is the seeder's peer id in the tracker registry: its replica id
// with anything outside the registry's key alphabet replaced, after the
// prefix by which the tracker knows a torrent the fleet seeds.
func (s *Service) swarmID() string {
	id := placement.Key(s.Config.ID)
	return tracker.SeederIDPrefix + id[:min(len(id), 50)]
}

// swarmAddrs resolves PublicAddr to the addresses members dial.
func (s *Service) swarmAddrs(ctx context.Context) ([]netip.AddrPort, error) {
	if s.Config.PublicAddr == "" {
		return nil, fmt.Errorf("no public address (set the seeder's PUBLIC_ADDR): members could not reach it")
	}
	if ap, err := netip.ParseAddrPort(s.Config.PublicAddr); err == nil {
		return []netip.AddrPort{ap}, nil
	}
	host, port, err := net.SplitHostPort(s.Config.PublicAddr)
	if err != nil {
		return nil, fmt.Errorf("public address %q: %w", s.Config.PublicAddr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("public address %q: port: %w", s.Config.PublicAddr, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("public address %q: %w", s.Config.PublicAddr, err)
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
	}
	return out, nil
}

// joinSwarm lists the seeder for ih (one entry: a torrent client has one
// peer address per family in the registry; the first resolved is used).
func (s *Service) joinSwarm(ctx context.Context, ih metainfo.Hash) {
	if s.Swarm == nil {
		return
	}
	addrs, err := s.swarmAddrs(ctx)
	if err == nil {
		err = s.Swarm.Register(ctx, ih, s.swarmID(), addrs[0], true)
	}
	if err != nil {
		s.Logger.Warn("not listed on the fleet tracker; members find this seeder only through x.pe, DHT or other trackers",
			"infohash", ih.HexString(), "err", err, "retry_in", s.Config.SwarmEvery)
	}
}

// leaveSwarm removes the seeder from ih's swarm.
func (s *Service) leaveSwarm(ih metainfo.Hash) {
	if s.Swarm == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Swarm.Remove(ctx, ih, s.swarmID()); err != nil {
		s.Logger.Debug("leaving the tracker swarm failed; the entry expires by itself", "infohash", ih.HexString(), "err", err)
	}
}

// keepInSwarm refreshes the entries of every seeded torrent, superseded ones
// still served included, until ctx ends.
func (s *Service) keepInSwarm(ctx context.Context) {
	t := time.NewTicker(s.Config.SwarmEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var hs []metainfo.Hash
		for _, tt := range s.seeding {
			hs = append(hs, tt.InfoHash())
		}
		for _, l := range s.snaps {
			for _, sn := range l {
				hs = append(hs, sn.ih)
			}
		}
		s.mu.Unlock()
		for _, ih := range hs {
			s.joinSwarm(ctx, ih)
		}
	}
}
