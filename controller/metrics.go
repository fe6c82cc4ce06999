package controller

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus collectors (namespace kuryr, subsystem controller).
type metrics struct {
	setup, teardown prometheus.Observer
	neutronCreated  *prometheus.CounterVec
	neutronDeleted  *prometheus.CounterVec

	gcPasses       *prometheus.CounterVec
	gcPassDuration prometheus.Histogram
	gcMarked       *prometheus.CounterVec
	gcDeleted      *prometheus.CounterVec
	gcFailed       *prometheus.CounterVec
	gcMarks        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "kuryr", Subsystem: "controller", Name: "namespace_network_seconds",
		Help:    "Time to set up (network, subnet, router interface, status) or tear down (ports, router interface, network, finalizer) a namespace network.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
	}, []string{"op"})
	m := &metrics{
		setup:    durations.WithLabelValues("setup"),
		teardown: durations.WithLabelValues("teardown"),
		neutronCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "neutron_resources_created_total", Help: "Neutron networks and subnets created for namespaces."}, []string{"kind"}),
		neutronDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "neutron_resources_deleted_total", Help: "Neutron networks deleted with their namespaces."}, []string{"kind"}),
		gcPasses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_passes_total", Help: "Port GC passes by result."}, []string{"result"}),
		gcPassDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_pass_seconds", Help: "Duration of a port GC pass.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		gcMarked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_ports_marked_total", Help: "Ports found orphaned and marked, by reason (node-gone, pod-gone)."}, []string{"reason"}),
		gcDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_ports_deleted_total", Help: "Orphaned ports deleted after the grace period and re-verification, by reason."}, []string{"reason"}),
		gcFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_port_delete_errors_total", Help: "Failed deletions of orphaned ports, by reason."}, []string{"reason"}),
		gcMarks: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kuryr", Subsystem: "controller",
			Name: "gc_ports_marked", Help: "Ports currently marked as orphaned, waiting for the grace period."}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{durations, m.neutronCreated, m.neutronDeleted, m.gcPasses, m.gcPassDuration,
		m.gcMarked, m.gcDeleted, m.gcFailed, m.gcMarks} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
