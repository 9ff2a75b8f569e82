package tracker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// UDP tracker protocol (BEP 15).
const (
	udpProtocolID = 0x41727101980

	actionConnect  = 0
	actionAnnounce = 1
	actionScrape   = 2
	actionError    = 3

	udpAnnounceLen = 98
	// Peers per UDP response, so a response fits one unfragmented datagram
	// (IPv6 guarantees only 1280 bytes).
	udpMaxPeers4 = 200
	udpMaxPeers6 = 60
	// udpConcurrency bounds the packets being answered at once (each waits
	// on NATS); beyond it packets are dropped and clients retry.
	udpConcurrency = 256
)

// ServeUDP answers BEP 15 connects, announces and scrapes on conn until ctx
// ends, then closes conn and waits for the answers in flight.
func (t *Tracker) ServeUDP(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, udpConcurrency)
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			conn.Close()
			return err
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // overloaded: the client retries (BEP 15 timeouts)
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if out := t.handleUDP(hctx, ua.AddrPort(), pkt); out != nil {
				conn.WriteTo(out, ua)
			}
		}()
	}
}

// handleUDP answers one packet from src; nil means no answer.
func (t *Tracker) handleUDP(ctx context.Context, src netip.AddrPort, pkt []byte) []byte {
	if len(pkt) < 16 {
		return nil // too short to answer: replying would help spoofers
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	connID := binary.BigEndian.Uint64(pkt[0:8])
	action := binary.BigEndian.Uint32(pkt[8:12])
	tid := pkt[12:16]
	if action == actionConnect {
		if connID != udpProtocolID {
			return nil
		}
		out := binary.BigEndian.AppendUint32(nil, actionConnect)
		out = append(out, tid...)
		return binary.BigEndian.AppendUint64(out, t.connectionID(src, time.Now(), 0))
	}
	if !t.validConnectionID(src, connID) {
		return udpError(tid, "bad connection id")
	}
	switch action {
	case actionAnnounce:
		a, err := parseUDPAnnounce(pkt, src.Addr(), t.cfg.TrustIPParam)
		if err != nil {
			t.metrics.announces.WithLabelValues("udp", a.Event.String(), "bad_request").Inc()
			return udpError(tid, err.Error())
		}
		maxPeers, family := udpMaxPeers4, 4
		if !src.Addr().Is4() {
			maxPeers, family = udpMaxPeers6, 6
		}
		if a.NumWant < 0 {
			a.NumWant = t.cfg.NumWant
		}
		a.NumWant, a.Family = min(a.NumWant, maxPeers), family
		resp, err := t.announce(ctx, "udp", a)
		var bad errBadRequest
		switch {
		case errors.As(err, &bad):
			return udpError(tid, bad.Error())
		case err != nil:
			return udpError(tid, "tracker unavailable, retry later")
		}
		out := binary.BigEndian.AppendUint32(nil, actionAnnounce)
		out = append(out, tid...)
		out = binary.BigEndian.AppendUint32(out, uint32(resp.Interval.Seconds()))
		out = binary.BigEndian.AppendUint32(out, uint32(resp.Incomplete))
		out = binary.BigEndian.AppendUint32(out, uint32(resp.Complete))
		for _, p := range resp.Peers {
			out = binary.BigEndian.AppendUint16(append(out, p.Addr().AsSlice()...), p.Port())
		}
		return out
	case actionScrape:
		var hashes [][20]byte
		for b := pkt[16:]; len(b) >= 20; b = b[20:] {
			hashes = append(hashes, [20]byte(b[:20]))
		}
		res, err := t.scrape(ctx, "udp", hashes)
		var bad errBadRequest
		switch {
		case errors.As(err, &bad):
			return udpError(tid, bad.Error())
		case err != nil:
			return udpError(tid, "tracker unavailable, retry later")
		}
		out := binary.BigEndian.AppendUint32(nil, actionScrape)
		out = append(out, tid...)
		// A torrent the tracker does not serve counts zeros, as opentracker's.
		for _, r := range res {
			out = binary.BigEndian.AppendUint32(out, uint32(r.Complete))
			out = binary.BigEndian.AppendUint32(out, uint32(r.Downloaded))
			out = binary.BigEndian.AppendUint32(out, uint32(r.Incomplete))
		}
		return out
	default:
		return udpError(tid, "unknown action")
	}
}

// parseUDPAnnounce reads a BEP 15 announce from src; bytes past the 98 of
// the request are BEP 41 options, not needed.
func parseUDPAnnounce(pkt []byte, src netip.Addr, trustIP bool) (announceRequest, error) {
	a := announceRequest{Compact: true}
	if len(pkt) < udpAnnounceLen {
		return a, badRequest("announce is %d bytes, want %d", len(pkt), udpAnnounceLen)
	}
	be := binary.BigEndian
	a.InfoHash = [20]byte(pkt[16:36])
	a.PeerID = [20]byte(pkt[36:56])
	a.Downloaded = int64(be.Uint64(pkt[56:64]))
	a.Left = max(int64(be.Uint64(pkt[64:72])), -1)
	a.Uploaded = int64(be.Uint64(pkt[72:80]))
	ev := be.Uint32(pkt[80:84])
	if ev > uint32(eventStopped) {
		return a, badRequest("unknown event %d", ev)
	}
	a.Event = event(ev)
	a.NumWant = max(int(int32(be.Uint32(pkt[92:96]))), -1)
	port := be.Uint16(pkt[96:98])
	if port == 0 {
		return a, badRequest("bad port 0")
	}
	ip := src
	if trustIP {
		if v := netip.AddrFrom4([4]byte(pkt[84:88])); !v.IsUnspecified() {
			ip = v
		}
	}
	a.Addr = netip.AddrPortFrom(ip, port)
	return a, nil
}

func udpError(tid []byte, msg string) []byte {
	out := binary.BigEndian.AppendUint32(nil, actionError)
	return append(append(out, tid...), msg...)
}

// connectionID is a stateless BEP 15 connection id: a MAC of the client's
// address and the minute, so any replica with the secret checks it without
// remembering it. back picks an earlier minute.
func (t *Tracker) connectionID(src netip.AddrPort, now time.Time, back int64) uint64 {
	m := hmac.New(sha256.New, t.cfg.UDPSecret)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(now.Unix()/60-back))
	m.Write(b[:])
	ab, _ := src.MarshalBinary()
	m.Write(ab)
	return binary.BigEndian.Uint64(m.Sum(nil))
}

// validConnectionID accepts ids of this minute and the last: a client may
// use an id for one minute (BEP 15), whenever in its minute it got it.
func (t *Tracker) validConnectionID(src netip.AddrPort, id uint64) bool {
	now := time.Now()
	return id == t.connectionID(src, now, 0) || id == t.connectionID(src, now, 1)
}
