package relay

import "github.com/prometheus/client_golang/prometheus"

// Metrics are relay's Prometheus metrics, by pubsub topic. The node counts
// what it publishes, receives and drops and follows the mesh; the
// validator counts what it refuses. A nil *Metrics records nothing.
type Metrics struct {
	MeshPeers *prometheus.GaugeVec   // by pubsub_topic
	Published *prometheus.CounterVec // by pubsub_topic
	Received  *prometheus.CounterVec // by pubsub_topic
	Dropped   *prometheus.CounterVec // by pubsub_topic: a slow subscriber missed a message
	Rejected  *prometheus.CounterVec // by pubsub_topic and reason: relayed messages dropped by validation
}

// NewMetrics creates the metrics, unregistered (Collectors lists them).
func NewMetrics() *Metrics {
	return &Metrics{
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
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.MeshPeers, m.Published, m.Received, m.Dropped, m.Rejected}
}

// Reject counts a message refused on topic for reason (one of the Reject
// and Ignore constants).
func (m *Metrics) Reject(topic, reason string) {
	if m != nil {
		m.Rejected.WithLabelValues(topic, reason).Inc()
	}
}
