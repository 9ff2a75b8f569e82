package node

import (
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a Node's Prometheus metrics: its connections' and those of
// the protocols it runs. A nil *Metrics records nothing.
type Metrics struct {
	PeersConnected prometheus.Gauge
	PeersDropped   *prometheus.CounterVec // by reason: peers we disconnected (wrong_cluster)
	PeersRefused   *prometheus.CounterVec // by reason: inbound connections refused (max_peers, banned)
	Relay          *relay.Metrics
	LightPush      *lightpush.Metrics // Config.LightPushService
	Store          *store.Metrics     // Config.StoreService
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		PeersConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_peers_connected", Help: "libp2p peers currently connected to the Waku peer.",
		}),
		PeersDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_peers_dropped_total", Help: "Peers disconnected by this peer, by reason (wrong_cluster: metadata named another cluster).",
		}, []string{"reason"}),
		PeersRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_peers_refused_total",
			Help: "Inbound connections refused after the handshake, by reason: max_peers (MaxPeers peers connected), banned (another cluster, lately).",
		}, []string{"reason"}),
		Relay:     relay.NewMetrics(),
		LightPush: lightpush.NewMetrics(),
		Store:     store.NewMetrics(),
	}
	for _, c := range m.all() {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// unregister undoes NewMetrics (New failed after registering).
func (m *Metrics) unregister(reg prometheus.Registerer) {
	if m == nil || reg == nil {
		return
	}
	for _, c := range m.all() {
		reg.Unregister(c)
	}
}

func (m *Metrics) all() []prometheus.Collector {
	cs := []prometheus.Collector{m.PeersConnected, m.PeersDropped, m.PeersRefused}
	cs = append(cs, m.Relay.Collectors()...)
	cs = append(cs, m.LightPush.Collectors()...)
	return append(cs, m.Store.Collectors()...)
}

// The protocols' metrics, nil when m is.

func (m *Metrics) relay() *relay.Metrics {
	if m == nil {
		return nil
	}
	return m.Relay
}

func (m *Metrics) lightPush() *lightpush.Metrics {
	if m == nil {
		return nil
	}
	return m.LightPush
}

func (m *Metrics) store() *store.Metrics {
	if m == nil {
		return nil
	}
	return m.Store
}

func (m *Metrics) droppedPeer(reason string) {
	if m != nil {
		m.PeersDropped.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) refusedPeer(reason string) {
	if m != nil {
		m.PeersRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) setPeers(n int) {
	if m != nil {
		m.PeersConnected.Set(float64(n))
	}
}

func (m *Metrics) setMesh(topic string, n int) {
	if m != nil {
		m.Relay.MeshPeers.WithLabelValues(topic).Set(float64(n))
	}
}

func (m *Metrics) published(topic string) {
	if m != nil {
		m.Relay.Published.WithLabelValues(topic).Inc()
	}
}

func (m *Metrics) received(topic string) {
	if m != nil {
		m.Relay.Received.WithLabelValues(topic).Inc()
	}
}

func (m *Metrics) dropped(topic string) {
	if m != nil {
		m.Relay.Dropped.WithLabelValues(topic).Inc()
	}
}
