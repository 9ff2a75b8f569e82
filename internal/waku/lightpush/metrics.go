package lightpush

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the lightpush service's Prometheus metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	Served *prometheus.CounterVec // by status: requests served
}

// NewMetrics creates the metrics, unregistered (Collectors lists them).
func NewMetrics() *Metrics {
	return &Metrics{
		Served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waku_lightpush_served_total", Help: "Lightpush requests this peer served, by status code.",
		}, []string{"status"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Served}
}

func (m *Metrics) served(code uint32) {
	if m != nil {
		m.Served.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
	}
}
