package store

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the store service's Prometheus metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	Messages prometheus.Gauge       // messages the service holds
	Bytes    prometheus.Gauge       // their cost against the byte budget
	Evicted  *prometheus.CounterVec // by reason: retention, capacity, bytes
	Skipped  *prometheus.CounterVec // by reason: messages the service did not keep
}

// NewMetrics creates the metrics, unregistered (Collectors lists them).
func NewMetrics() *Metrics {
	return &Metrics{
		Messages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_store_messages", Help: "Messages the in-memory store service holds.",
		}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "waku_store_bytes",
			Help: "Bytes the store service's messages count against its budget (encoded size, content topic and 256 bytes each).",
		}),
		Evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_store_evicted_total",
			Help: "Messages the store service dropped, by reason: retention (too old), capacity (message count), bytes (byte budget).",
		}, []string{"reason"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_store_skipped_total",
			Help: "Relayed messages the store service did not keep, by reason: ephemeral, timestamp (more than 20 s from our clock), " +
				"retention, duplicate, full (it would be the first to go, or is larger than the byte budget).",
		}, []string{"reason"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Messages, m.Bytes, m.Evicted, m.Skipped}
}

func (m *Metrics) setSize(messages int, bytes int64) {
	if m != nil {
		m.Messages.Set(float64(messages))
		m.Bytes.Set(float64(bytes))
	}
}

func (m *Metrics) evicted(reason string, n int) {
	if m != nil {
		m.Evicted.WithLabelValues(reason).Add(float64(n))
	}
}

func (m *Metrics) skipped(reason string) {
	if m != nil {
		m.Skipped.WithLabelValues(reason).Inc()
	}
}
