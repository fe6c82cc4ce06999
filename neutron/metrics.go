package neutron

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OpStats is what one operation cost so far: HTTP requests (each page and each retry counts),
// those that failed (transport error or a status >= 400), and their latency.
type OpStats struct {
	Count        int
	Errors       int
	TotalLatency time.Duration
	MaxLatency   time.Duration
	LimiterWait  time.Duration // time spent waiting for the token bucket and a concurrency slot
}

// Mean is the mean latency per request.
func (s OpStats) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.TotalLatency / time.Duration(s.Count)
}

// Stats maps an operation name (e.g. "ports.bulk_create") to its cost.
type Stats map[string]OpStats

// Requests is the number of HTTP requests of all operations.
func (s Stats) Requests() int {
	n := 0
	for _, o := range s {
		n += o.Count
	}
	return n
}

// Sub returns the cost between an earlier snapshot and s (for counting the requests of one step).
func (s Stats) Sub(earlier Stats) Stats {
	d := Stats{}
	for op, o := range s {
		e := earlier[op]
		if o.Count == e.Count {
			continue
		}
		d[op] = OpStats{Count: o.Count - e.Count, Errors: o.Errors - e.Errors,
			TotalLatency: o.TotalLatency - e.TotalLatency, MaxLatency: o.MaxLatency,
			LimiterWait: o.LimiterWait - e.LimiterWait}
	}
	return d
}

// String is a table: "Neutron requests and latency per operation".
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s %6s %6s %10s %10s %10s\n", "operation", "count", "errors", "mean", "max", "waited")
	for _, op := range slices.Sorted(maps.Keys(s)) {
		o := s[op]
		fmt.Fprintf(&b, "%-26s %6d %6d %10s %10s %10s\n", op, o.Count, o.Errors,
			o.Mean().Round(time.Millisecond), o.MaxLatency.Round(time.Millisecond), o.LimiterWait.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "%-26s %6d\n", "total", s.Requests())
	return b.String()
}

// metrics holds the Prometheus collectors and the in-process Stats of one Client.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	wait     *prometheus.HistogramVec

	mu    sync.Mutex
	stats Stats
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kuryr", Subsystem: "neutron", Name: "requests_total",
			Help: "Neutron HTTP requests by operation and result code (0: no response).",
		}, []string{"operation", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kuryr", Subsystem: "neutron", Name: "request_duration_seconds",
			Help:    "Latency of Neutron HTTP requests, body included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms .. 41 s
		}, []string{"operation"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kuryr", Subsystem: "neutron", Name: "limiter_wait_seconds",
			Help:    "Time Neutron requests waited for the token bucket and a concurrency slot.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"operation"}),
		stats: Stats{},
	}
}

func (m *metrics) waited(op string, d time.Duration) {
	m.wait.WithLabelValues(op).Observe(d.Seconds())
	m.mu.Lock()
	o := m.stats[op]
	o.LimiterWait += d
	m.stats[op] = o
	m.mu.Unlock()
}

func (m *metrics) observe(op string, code int, d time.Duration) {
	m.requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
	m.mu.Lock()
	o := m.stats[op]
	o.Count++
	if code == 0 || code >= 400 {
		o.Errors++
	}
	o.TotalLatency += d
	o.MaxLatency = max(o.MaxLatency, d)
	m.stats[op] = o
	m.mu.Unlock()
}

func (m *metrics) snapshot() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.stats)
}
