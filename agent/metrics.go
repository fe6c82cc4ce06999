package agent

import (
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuryr-pools/kuryr/pool"
)

// cniBuckets reach below a millisecond: an ADD from the pool is a few milliseconds of netlink work.
var cniBuckets = []float64{0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics are the agent's own Prometheus metrics.
type Metrics struct {
	requests *prometheus.HistogramVec
}

// NewMetrics creates the CNI request histograms.
func NewMetrics() *Metrics {
	return &Metrics{requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "kuryr", Subsystem: "cni", Name: "request_duration_seconds",
		Help:    "Time the agent took to answer a CNI command, by command and result (ok or the CNI error code).",
		Buckets: cniBuckets,
	}, []string{"command", "result"})}
}

// Observe records one CNI request.
func (m *Metrics) Observe(command, result string, d time.Duration) {
	if m != nil {
		m.requests.WithLabelValues(command, result).Observe(d.Seconds())
	}
}

// Collectors are the metrics to register, with the pool gauges and counters of d.
func (m *Metrics) Collectors(d *pool.Driver) []prometheus.Collector {
	return []prometheus.Collector{m.requests, &poolCollector{d: d}}
}

var (
	poolPortsDesc = prometheus.NewDesc("kuryr_pool_ports", "Ports of a pool by state (free, in_use, cooling, recycling, deleting, in_flight) and pods waiting.",
		[]string{"node", "project", "network", "state"}, nil)
	poolEventsDesc = prometheus.NewDesc("kuryr_pool_operations_total", "Cumulative pool operations of the driver.",
		[]string{"operation"}, nil)
)

// poolCollector reads the driver's state at scrape time: no bookkeeping on the ADD path.
type poolCollector struct{ d *pool.Driver }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolPortsDesc
	ch <- poolEventsDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.d.Snapshot()
	for _, p := range snap.Pools {
		for state, n := range map[string]int{"free": p.Stats.Free, "in_use": p.Stats.InUse, "cooling": p.Stats.Cooling,
			"recycling": p.Stats.Recycling, "deleting": p.Stats.Deleting, "in_flight": p.Stats.InFlight, "waiting": p.Stats.Waiting} {
			ch <- prometheus.MustNewConstMetric(poolPortsDesc, prometheus.GaugeValue, float64(n), p.Key.Node, p.Key.Project, p.Key.Network, state)
		}
	}
	k := snap.Counters
	for op, n := range map[string]int64{"ports_created": k.PortsCreated, "create_failures": k.CreateFailures, "ports_recycled": k.PortsRecycled,
		"recycle_failures": k.RecycleFailures, "ports_deleted": k.PortsDeleted, "delete_failures": k.DeleteFailures,
		"sg_rewrites": k.SGRewrites, "sg_rewrite_failures": k.SGRewriteFailures, "mark_failures": k.MarkFailures, "marks_dropped": k.MarksDropped} {
		ch <- prometheus.MustNewConstMetric(poolEventsDesc, prometheus.CounterValue, float64(n), op)
	}
}

// metricsHandler serves the metrics, and with withPprof Go's profiles under /debug/pprof/ ([cni_daemon]
// pprof, accepted on a loopback metrics_address only): CPU, heap, goroutines, and mutex and block
// contention, which are sampled only then (they cost on every contended lock).
func metricsHandler(metrics http.Handler, withPprof bool) http.Handler {
	if !withPprof {
		return metrics
	}
	runtime.SetMutexProfileFraction(5)
	runtime.SetBlockProfileRate(int((100 * time.Microsecond).Nanoseconds())) // a sample per 100 µs spent blocked
	mux := http.NewServeMux()
	mux.Handle("/", metrics)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
