package wakupeer

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a Peer's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	PeersConnected prometheus.Gauge
	MeshPeers      *prometheus.GaugeVec   // by pubsub_topic
	Published      *prometheus.CounterVec // by pubsub_topic
	Received       *prometheus.CounterVec // by pubsub_topic
	Dropped        *prometheus.CounterVec // by pubsub_topic: a slow Subscribe reader missed a message
	Rejected       *prometheus.CounterVec // by pubsub_topic and reason: relayed messages dropped by validation
	LightPush      *prometheus.CounterVec // by status: lightpush requests served (Config.LightPushService)
	PeersDropped   *prometheus.CounterVec // by reason: peers we disconnected (wrong_cluster)
	PeersRefused   *prometheus.CounterVec // by reason: inbound connections refused (max_peers, banned)
	StoreMessages  prometheus.Gauge       // messages the store service holds (Config.StoreService)
	StoreBytes     prometheus.Gauge       // their cost against Config.StoreMaxBytes
	StoreEvicted   *prometheus.CounterVec // by reason: retention, capacity, bytes
	StoreSkipped   *prometheus.CounterVec // by reason: messages the store service did not keep
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		PeersConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_peers_connected", Help: "libp2p peers currently connected to the Waku peer.",
		}),
		MeshPeers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "waku_relay_mesh_peers", Help: "Gossipsub mesh peers per pubsub topic.",
		}, []string{"pubsub_topic"}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_relay_messages_published_total", Help: "Messages published on relay per pubsub topic.",
		}, []string{"pubsub_topic"}),
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_relay_messages_received_total", Help: "Valid messages received from other relay peers per pubsub topic.",
		}, []string{"pubsub_topic"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_relay_messages_dropped_total", Help: "Received messages a slow subscriber missed, per pubsub topic.",
		}, []string{"pubsub_topic"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_relay_messages_rejected_total",
			Help: "Relayed messages dropped by validation, neither delivered nor forwarded, per pubsub topic and reason: " +
				"not_waku_message, too_large, no_timestamp, too_old, too_new (more than 20 s from our clock), " +
				"rate_limited (the forwarding peer was over its rate; ignored, no score penalty), validation_overloaded.",
		}, []string{"pubsub_topic", "reason"}),
		LightPush: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_lightpush_served_total", Help: "Lightpush requests this peer served, by status code.",
		}, []string{"status"}),
		PeersDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_peers_dropped_total", Help: "Peers disconnected by this peer, by reason (wrong_cluster: metadata named another cluster).",
		}, []string{"reason"}),
		PeersRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_peers_refused_total",
			Help: "Inbound connections refused after the handshake, by reason: max_peers (MaxPeers peers connected), banned (another cluster, lately).",
		}, []string{"reason"}),
		StoreMessages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_store_messages", Help: "Messages the in-memory store service holds.",
		}),
		StoreBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_store_bytes",
			Help: "Bytes the store service's messages count against its budget (encoded size, content topic and 256 bytes each).",
		}),
		StoreEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_store_evicted_total",
			Help: "Messages the store service dropped, by reason: retention (too old), capacity (message count), bytes (byte budget).",
		}, []string{"reason"}),
		StoreSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_store_skipped_total",
			Help: "Relayed messages the store service did not keep, by reason: ephemeral, timestamp (more than 20 s from our clock), " +
				"retention, duplicate, full (it would be the first to go, or is larger than the byte budget).",
		}, []string{"reason"}),
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
	return []prometheus.Collector{m.PeersConnected, m.MeshPeers, m.Published, m.Received, m.Dropped, m.Rejected, m.LightPush, m.PeersDropped,
		m.PeersRefused, m.StoreMessages, m.StoreBytes, m.StoreEvicted, m.StoreSkipped}
}

func (m *Metrics) lightPushServed(code uint32) {
	if m != nil {
		m.LightPush.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
	}
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
		m.MeshPeers.WithLabelValues(topic).Set(float64(n))
	}
}

func (m *Metrics) published(topic string) {
	if m != nil {
		m.Published.WithLabelValues(topic).Inc()
	}
}

func (m *Metrics) received(topic string) {
	if m != nil {
		m.Received.WithLabelValues(topic).Inc()
	}
}

func (m *Metrics) dropped(topic string) {
	if m != nil {
		m.Dropped.WithLabelValues(topic).Inc()
	}
}

func (m *Metrics) rejected(topic, reason string) {
	if m != nil {
		m.Rejected.WithLabelValues(topic, reason).Inc()
	}
}

func (m *Metrics) setStore(messages int, bytes int64) {
	if m != nil {
		m.StoreMessages.Set(float64(messages))
		m.StoreBytes.Set(float64(bytes))
	}
}

func (m *Metrics) storeEvicted(reason string, n int) {
	if m != nil {
		m.StoreEvicted.WithLabelValues(reason).Add(float64(n))
	}
}

func (m *Metrics) storeSkipped(reason string) {
	if m != nil {
		m.StoreSkipped.WithLabelValues(reason).Inc()
	}
}
