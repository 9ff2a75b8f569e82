package main

import (
	"encoding/binary"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/anacrolix/torrent/bencode"
)

// tracker is a minimal HTTP BitTorrent tracker (BEP 3, compact peers) for
// loopback benchmarks: with DHT off, clients find each other only here.
type tracker struct {
	mu    sync.Mutex
	peers map[string]map[string]bool // infohash -> "ip:port"
}

func (t *tracker) reset() {
	t.mu.Lock()
	t.peers = map[string]map[string]bool{}
	t.mu.Unlock()
}

func (t *tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ih := q.Get("info_hash")
	port, err := strconv.Atoi(q.Get("port"))
	if len(ih) != 20 || err != nil {
		w.Write(bencode.MustMarshal(map[string]string{"failure reason": "bad announce"}))
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	self := net.JoinHostPort(host, strconv.Itoa(port))
	t.mu.Lock()
	if t.peers[ih] == nil {
		t.peers[ih] = map[string]bool{}
	}
	if q.Get("event") == "stopped" {
		delete(t.peers[ih], self)
	} else {
		t.peers[ih][self] = true
	}
	var compact []byte
	for p := range t.peers[ih] {
		if p == self {
			continue
		}
		h, ps, _ := net.SplitHostPort(p)
		ip := net.ParseIP(h).To4()
		pn, _ := strconv.Atoi(ps)
		if ip == nil {
			continue
		}
		compact = append(compact, ip...)
		compact = binary.BigEndian.AppendUint16(compact, uint16(pn))
	}
	t.mu.Unlock()
	w.Write(bencode.MustMarshal(map[string]any{"interval": 5, "min interval": 1, "peers": string(compact)}))
}

func startTracker() (*tracker, string) {
	t := &tracker{}
	t.reset()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, t)
	return t, "http://" + ln.Addr().String() + "/announce"
}
