// kuryr-controller does the cluster-wide work: namespace subnets and their pool pre-population,
// and recovery of ports whose node or pod is gone. It never sits on the pod ADD path. Replicas
// elect a leader on a Lease; only the leader works.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/controller"
	"github.com/kuryr-pools/kuryr/kubeclient"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/version"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("kuryr-controller", flag.ExitOnError)
	var configFiles config.Files
	configFiles.Register(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default [kubernetes] kubeconfig, else api_root, else in-cluster)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	leaderElect := fs.Bool("leader-elect", true, "elect a leader on a Lease before working (off: run at once, a single replica only)")
	leaseNamespace := fs.String("lease-namespace", "kube-system", "namespace of the leader Lease "+controller.LeaseName)
	healthAddr := fs.String("health-address", "127.0.0.1:8082", "host:port of /alive and /ready (empty: none)")
	metricsAddr := fs.String("metrics-address", "127.0.0.1:9654", "host:port of /metrics (empty: none)")
	gcPeriod := fs.Duration("gc-period", controller.DefaultGCPeriod, "time between port GC passes; an orphaned port is deleted after being orphaned this long")
	workers := fs.Int("workers", 2, "namespace workers")
	nsSelector := fs.String("namespace-selector", "", "label selector: only matching namespaces get a network (default: all but kube-system, kube-public, kube-node-lease)")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(version.String("kuryr-controller"))
		return 0
	}
	cfg, err := configFiles.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kuryr-controller: invalid configuration: %v\n", err)
		return 2
	}
	selector, err := labels.Parse(*nsSelector)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kuryr-controller: --namespace-selector %q: %v\n", *nsSelector, err)
		return 2
	}
	if *nsSelector == "" {
		selector = nil
	}
	if *gcPeriod <= 0 {
		fmt.Fprintf(os.Stderr, "kuryr-controller: --gc-period %s must be positive\n", *gcPeriod)
		return 2
	}
	logger := klog.Background().WithValues("version", version.Version)
	for _, w := range cfg.Warnings() {
		logger.Info("configuration warning: " + w)
	}
	// A grace period shorter than an agent's release path could delete a port an agent is about
	// to recycle.
	if recycle := cfg.VIFPool.PortsPoolUpdateFrequency + cfg.VIFPool.PortsPoolCooldown; *gcPeriod < 2*recycle {
		logger.Info("configuration warning: --gc-period is less than twice ports_pool_update_frequency + ports_pool_cooldown; "+
			"a released port waiting to be recycled may be taken for a leak", "gcPeriod", *gcPeriod, "recycleTime", recycle)
	}
	ctx, stop := signal.NotifyContext(klog.NewContext(context.Background(), logger), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := start(ctx, cfg, options{kubeconfig: *kubeconfig, leaderElect: *leaderElect, leaseNamespace: *leaseNamespace,
		healthAddr: *healthAddr, metricsAddr: *metricsAddr, gcPeriod: *gcPeriod, workers: *workers, selector: selector}); err != nil {
		logger.Error(err, "kuryr-controller stopped")
		klog.Flush()
		return 1
	}
	klog.Flush()
	return 0
}

type options struct {
	kubeconfig, leaseNamespace, healthAddr, metricsAddr string
	leaderElect                                         bool
	gcPeriod                                            time.Duration
	workers                                             int
	selector                                            labels.Selector
}

func start(ctx context.Context, cfg *config.Config, o options) error {
	logger := klog.FromContext(ctx)
	ua := version.UserAgent("kuryr-controller")
	k := cfg.Kubernetes
	rc, err := kubeclient.Config(ctx, k, o.kubeconfig, ua)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	nc, err := neutron.NewClient(ctx, neutron.OptionsFromConfig(cfg), ua)
	if err != nil {
		return fmt.Errorf("neutron client: %w", err)
	}
	project := cfg.NeutronDefaults.Project
	if project == "" {
		project = nc.Project()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(nc.Collectors()...)
	c, err := controller.New(controller.Options{Config: cfg, Kube: kube, Dynamic: dyn, Neutron: nc, Project: project,
		Workers: o.workers, GCPeriod: o.gcPeriod, Registerer: reg, NamespaceSelector: o.selector})
	if err != nil {
		return err
	}

	errc := make(chan error, 3)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var leading atomic.Bool
	health := &controller.Health{Ready: c.Ready, Leading: leading.Load}
	if o.leaderElect {
		health.Leader = leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	}
	if o.healthAddr != "" {
		go func() { errc <- controller.Serve(ctx, o.healthAddr, health.Handler()) }()
	}
	if o.metricsAddr != "" {
		go func() {
			errc <- controller.Serve(ctx, o.metricsAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		}()
	}
	logger.Info("kuryr-controller starting", "podSubnetsDriver", k.PodSubnetsDriver, "cluster", k.ClusterName,
		"project", project, "leaderElect", o.leaderElect, "gcPeriod", o.gcPeriod)
	runDone := make(chan error, 1)
	go func() {
		if !o.leaderElect {
			leading.Store(true)
			runDone <- c.Run(ctx)
			return
		}
		id, err := identity()
		if err != nil {
			runDone <- err
			return
		}
		runDone <- controller.RunLeaderElected(ctx, kube, controller.LeaderOptions{Namespace: o.leaseNamespace, Identity: id,
			Healthz: health.Leader, OnLeading: leading.Store}, func(ctx context.Context) {
			if err := c.Run(ctx); err != nil {
				errc <- err
			}
		})
	}()
	err = nil
	select {
	case <-ctx.Done():
	case err = <-errc:
	case err = <-runDone:
		return err // nil only when ctx is done
	}
	// Stop, and wait for the Lease to be released so that a standby takes over at once.
	cancel()
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		logger.Info("shutdown: the leader election did not stop in 10s")
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// identity names this replica in the Lease: the pod name (POD_NAME) or host name, made unique.
func identity() (string, error) {
	name := os.Getenv("POD_NAME")
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("leader election identity: %w", err)
		}
		name = h
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "_" + hex.EncodeToString(b), nil
}
