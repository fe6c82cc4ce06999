package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/kubeclient"
	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/netns"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/version"
)

// Options are the agent's command-line settings; everything else comes from kuryr.conf.
type Options struct {
	Config   *config.Config
	NodeName string
	// NodeIP is the node's address on a worker subnet (its trunk parent port's IP); read from the
	// Node object when empty.
	NodeIP string
	// Standalone runs without Kubernetes: pods are named by their CNI_ARGS, the defaults of
	// [neutron_defaults] give every pod's project, subnet and security groups.
	Standalone bool
	// OnReady, when set, is called once the pools are loaded and the sockets serve.
	OnReady func()
	// Install puts kuryr-cni on the node at start and its conflist once the agent is ready.
	Install Install
}

// nodeLabelPodVIF is the node label kuryr's MultiVIFPool reads to pick a node's pod VIF driver
// (its docs say annotation; the annotation is accepted as a fallback).
const nodeLabelPodVIF = "pod_vif"

// Run runs the node agent until ctx is done.
func Run(ctx context.Context, o Options) error {
	log := klog.FromContext(ctx).WithValues("node", o.NodeName)
	ctx = klog.NewContext(ctx, log)
	cfg := o.Config
	if o.NodeName == "" {
		return errors.New("the node name is required (--node-name or NODE_NAME)")
	}
	namespaced := cfg.Kubernetes.PodSubnetsDriver == "namespace"
	if namespaced && o.Standalone {
		return errors.New("[kubernetes] pod_subnets_driver = namespace reads the namespaces' KuryrNetworks from the Kubernetes API: it cannot run --standalone")
	}
	var kube kubernetes.Interface
	var dyn dynamic.Interface
	var node *corev1.Node
	if !o.Standalone {
		rc, err := kubeclient.Config(ctx, cfg.Kubernetes, "", version.UserAgent("kuryr-agent"))
		if err != nil {
			return err
		}
		if kube, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		if dyn, err = dynamic.NewForConfig(rc); err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		if node, err = getNode(ctx, kube, o.NodeName); err != nil {
			return err
		}
		if o.NodeIP == "" {
			o.NodeIP = nodeInternalIP(node)
		}
	}

	nc, err := neutron.NewClient(ctx, neutron.OptionsFromConfig(cfg), version.UserAgent("kuryr-agent"))
	if err != nil {
		return fmt.Errorf("neutron client: %w", err)
	}
	mapping, err := cfg.PoolMapping()
	if err != nil {
		return err
	}
	podVIF := cfg.Kubernetes.PodVIFDriver
	if node != nil {
		if v := node.Labels[nodeLabelPodVIF]; v != "" {
			podVIF = v
		} else if v := node.Annotations[nodeLabelPodVIF]; v != "" {
			podVIF = v
		}
	}
	poolDriver, ok := mapping[podVIF]
	if !ok {
		return fmt.Errorf("node %s uses pod VIF driver %q, which [vif_pool] vif_pool_mapping does not map to a pool driver", o.NodeName, podVIF)
	}
	nested := podVIF == "nested-vlan"
	backend, err := newBackend(cfg, nc, nested, o.NodeName, o.NodeIP)
	if err != nil {
		return err
	}
	log = log.WithValues("podVIF", podVIF, "poolDriver", poolDriver, "poolNode", backend.Node())
	ctx = klog.NewContext(ctx, log)

	binding := Binding{Nested: nested, DefaultVIFType: cfg.Binding.DefaultVIFType, OVSBridge: cfg.NeutronDefaults.OVSBridge,
		LinuxBridge: cfg.Binding.LinuxBridge, NetworkDeviceMTU: cfg.NeutronDefaults.NetworkDeviceMTU}
	if nested {
		if binding.Parent, err = netns.DetectParent(cfg.Binding.LinkIface); err != nil {
			return fmt.Errorf("trunk parent interface: %w", err)
		}
	}

	// The default network: every pod's with the default subnet driver; with the namespace driver,
	// that of the pods of namespaces that get no KuryrNetwork, when pod_subnet is set.
	var def *PodNetwork
	var defNetworks *DefaultNetworks
	if !namespaced || cfg.NeutronDefaults.PodSubnet != "" {
		if defNetworks, err = NewDefaultNetworks(ctx, cfg, nc); err != nil {
			return err
		}
		d := defNetworks.Default()
		def = &d
	}
	removeKilledWrites(cfg.CNIDaemon.CheckpointPath)
	ckpt, err := OpenCheckpoint(cfg.CNIDaemon.CheckpointPath)
	if err != nil {
		return err
	}
	var notifier *KubeNotifier
	var onRefillError func(pool.Key, error)
	if kube != nil {
		notifier = NewKubeNotifier(kube, o.NodeName, cfg.Kubernetes.UseEvents)
		onRefillError = notifier.RefillFailed
	}
	driver := pool.NewDriver(backend, pool.DriverOptions{
		OnRefillError: onRefillError,
		Limits: pool.Limits{Min: cfg.VIFPool.PortsPoolMin, Max: cfg.VIFPool.PortsPoolMax, Batch: cfg.VIFPool.PortsPoolBatch,
			Cooldown: cfg.VIFPool.PortsPoolCooldown, IdleTimeout: cfg.VIFPool.PortsPoolIdleTimeout},
		UpdateFrequency: cfg.VIFPool.PortsPoolUpdateFrequency,
		Noop:            poolDriver == "noop",
	})
	var networks NetworkResolver
	var nsNetworks *NamespaceNetworks
	if namespaced {
		count := 0
		if cfg.Kubernetes.PopulationEnabled() {
			count = kuryrnet.PopulateCount(cfg.VIFPool.PortsPoolBatch, cfg.VIFPool.PortsPoolMin)
		}
		nsNetworks = NewNamespaceNetworks(dyn, nc, driver, NamespaceNetworksOptions{Node: backend.Node(),
			SGs: pool.NewSGSet(cfg.NeutronDefaults.PodSecurityGroups...), PopulateCount: count, Fallback: def,
			Excluded: kuryrnet.ExcludedNamespaces, Wait: cfg.CNIDaemon.PoolWaitTimeout})
		networks = nsNetworks
	} else {
		networks = defNetworks
	}
	svc := &Service{Node: backend.Node(), Pools: driver, Networks: networks, Plugger: NetnsPlugger{OVSDB: cfg.Binding.OVSDBConnection}, Checkpoint: ckpt,
		Binding: binding, PoolWait: cfg.CNIDaemon.PoolWaitTimeout}
	var pods *PodCache
	if kube != nil {
		pods = NewPodCache(kube, o.NodeName)
		svc.Pods = pods
		svc.Notifier = notifier
	}

	if err := o.Install.InstallPlugin(); err != nil {
		return err
	}
	if err := recoverState(ctx, driver, ckpt, svc.Plugger, netns.LinkExists); err != nil {
		return err
	}
	if def != nil {
		driver.EnsurePool(pool.Key{Node: backend.Node(), Project: def.Project, Network: def.NetworkID}, def.SubnetIDs, def.SGs)
	}

	metrics := NewMetrics()
	errc := make(chan error, 4)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if pods != nil {
		// The cache only completes pod references: serve without waiting for it to sync, so that
		// an unreachable API server never stops pods from starting.
		pods.Start(ctx)
	}
	driverDone := make(chan struct{})
	go func() {
		defer close(driverDone)
		driver.Run(ctx)
	}()
	defer func() {
		// The driver finishes the port deletions it was handed (within its shutdown grace) before
		// the process exits.
		cancel()
		<-driverDone
	}()
	if nsNetworks != nil {
		go nsNetworks.Run(ctx, 2)
	}
	go pruneCooling(ctx, driver, ckpt, cfg.VIFPool.PortsPoolUpdateFrequency)
	if notifier != nil {
		go notifier.Run(ctx, 2)
	}
	go func() {
		errc <- ServeUnix(ctx, cfg.CNIDaemon.SocketPath, SocketPolicy{Group: cfg.CNIDaemon.SocketGroup}, CNIHandler(ctx, svc, metrics))
	}()
	if cfg.Kubernetes.EnableManager {
		ms := &ManageServer{Admin: driver, Max: cfg.VIFPool.PortsPoolMax, Policy: SocketPolicy{Group: cfg.PoolManager.SockGroup},
			DefaultPool: func(context.Context) (pool.Key, error) {
				if def == nil {
					return pool.Key{}, errors.New("this node has no default pool ([neutron_defaults] pod_subnet is not set): name the network, as in [trunk_ip, project, network]")
				}
				return pool.Key{Node: backend.Node(), Project: def.Project, Network: def.NetworkID}, nil
			}}
		go func() {
			errc <- ServeUnix(ctx, cfg.PoolManager.SockFile, ms.Policy, ms.Handler(ctx))
		}()
	}
	if addr := cfg.CNIHealthServer.HealthAddress; addr != "" {
		go func() { errc <- serveTCP(ctx, addr, healthHandler(svc)) }()
	}
	if addr := cfg.CNIDaemon.MetricsAddress; addr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(nc.Collectors()...)
		reg.MustRegister(metrics.Collectors(driver)...)
		h := metricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), cfg.CNIDaemon.Pprof)
		go func() { errc <- serveTCP(ctx, addr, h) }()
	}
	svc.SetReady(true)
	if err := o.Install.InstallConflist(); err != nil {
		return err
	}
	log.Info("kuryr-agent ready", "cniSocket", cfg.CNIDaemon.SocketPath, "manager", cfg.Kubernetes.EnableManager, "pools", len(driver.Keys()))
	if o.OnReady != nil {
		o.OnReady()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if err != nil {
			return err
		}
		return nil
	}
}

func newBackend(cfg *config.Config, nc *neutron.Client, nested bool, nodeName, nodeIP string) (pool.Backend, error) {
	if nested {
		if nodeIP == "" {
			return nil, errors.New("nested pools need the node's IP on a worker subnet (--node-ip, NODE_IP, or the Node object)")
		}
		return neutron.NewNestedBackend(nc, neutron.NestedOptions{NodeIP: nodeIP, NodeName: nodeName, WorkerSubnets: cfg.PodVIFNested.WorkerNodesSubnets,
			ClusterName: cfg.Kubernetes.ClusterName, ResourceTags: cfg.NeutronDefaults.ResourceTags, PortDebug: cfg.Kubernetes.PortDebug})
	}
	return neutron.NewBareMetalBackend(nc, neutron.BareMetalOptions{NodeName: nodeName, ClusterName: cfg.Kubernetes.ClusterName,
		ResourceTags: cfg.NeutronDefaults.ResourceTags, PortDebug: cfg.Kubernetes.PortDebug,
		// Without an L2 agent Neutron fails every binding; the plug still works from configuration.
		IgnoreBindingFailure: true})
}

func getNode(ctx context.Context, kube kubernetes.Interface, name string) (*corev1.Node, error) {
	var node *corev1.Node
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		node, err = kube.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			return node, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	return nil, fmt.Errorf("read Node %s: %w", name, err)
}

func nodeInternalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

func healthHandler(svc *Service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /alive", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ready := func(w http.ResponseWriter, _ *http.Request) {
		if !svc.Ready() {
			http.Error(w, "Ports not loaded into the pools.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
	mux.HandleFunc("GET /ready", ready)
	mux.HandleFunc("GET /readyz", ready)
	return mux
}

// serveTCP serves h on addr (loopback by default in the configuration) until ctx is done.
func serveTCP(ctx context.Context, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return serve(ctx, l, h, addr)
}
