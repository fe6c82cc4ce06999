// Package controller is kuryr-controller: the cluster-wide work that never sits on the pod ADD
// path. With [kubernetes] pod_subnets_driver = namespace it gives every namespace a Neutron network
// and subnet recorded in a KuryrNetwork (and tells the agents to pre-populate their pools for it);
// in every mode it garbage-collects the Neutron ports of deleted nodes and of pods that are gone.
// It follows sample-controller: shared informers, a typed rate-limited workqueue keyed by
// namespace name, level-triggered idempotent syncs, and a finalizer added before any Neutron
// resource is created and removed only after they are deleted. Only the leader of a Lease runs it
// (RunLeaderElected).
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
)

// Defaults of Options.
const (
	// DefaultGCPeriod is kuryr's NODE_PORTS_CLEAN_FREQUENCY.
	DefaultGCPeriod = 600 * time.Second
	// DefaultGCMaxDeletes bounds the ports one GC pass deletes; the rest wait for the next pass.
	DefaultGCMaxDeletes = 200
	// DefaultGCDeleteRate is the token bucket of GC deletions (ports per second, burst 2x).
	DefaultGCDeleteRate = 10
	defaultWorkers      = 2
	defaultResync       = 10 * time.Minute
	fieldManager        = "kuryr-controller"
	component           = "kuryr-controller"
)

// DefaultExcludedNamespaces get no namespace network: the control plane's own namespaces. Agents
// give their pods [neutron_defaults] pod_subnet instead.
var DefaultExcludedNamespaces = kuryrnet.ExcludedNamespaces

// Neutron is what the controller needs from Neutron; *neutron.Client implements it.
type Neutron interface {
	ListNetworks(ctx context.Context, f neutron.NetworkFilter) ([]neutron.ListedNetwork, error)
	CreateNetwork(ctx context.Context, s neutron.NetworkSpec) (neutron.ListedNetwork, error)
	DeleteNetwork(ctx context.Context, id string) error
	SetNetworkTags(ctx context.Context, id string, tags []string) error
	ListSubnets(ctx context.Context, f neutron.SubnetFilter) ([]neutron.ListedSubnet, error)
	CreateSubnet(ctx context.Context, s neutron.SubnetSpec) (neutron.ListedSubnet, error)
	SetSubnetTags(ctx context.Context, id string, tags []string) error
	GetSubnetPool(ctx context.Context, id string) (neutron.SubnetPool, error)
	AddRouterInterface(ctx context.Context, routerID, subnetID string) (neutron.RouterInterface, error)
	RemoveRouterInterface(ctx context.Context, routerID, subnetID string) error
	ListPorts(ctx context.Context, f neutron.PortFilter) ([]neutron.Port, error)
	GetPort(ctx context.Context, id string) (neutron.Port, error)
	DeletePortIf(ctx context.Context, id string, revision int) error
	DeletePorts(ctx context.Context, ids []string) map[string]error
	ListTrunks(ctx context.Context, f neutron.TrunkFilter) ([]neutron.Trunk, error)
	RemoveSubports(ctx context.Context, trunkID string, portIDs []string) error
}

var _ Neutron = (*neutron.Client)(nil)

// Options configure a Controller. Config, Kube and Neutron are required; Dynamic is required with
// the namespace subnet driver.
type Options struct {
	Config  *config.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Neutron Neutron
	// Project is the project of namespace networks: [neutron_defaults] project when set, else the
	// project of the Neutron credentials.
	Project string

	Workers            int           // namespace workers (default 2)
	Resync             time.Duration // informer resync (default 10 min)
	ExcludedNamespaces []string      // default DefaultExcludedNamespaces
	// NamespaceSelector, when set, limits namespace networks to the namespaces whose labels match
	// (tests sharing one API server; staged roll-outs). Others are left alone entirely.
	NamespaceSelector labels.Selector

	GCPeriod     time.Duration // between GC passes (default DefaultGCPeriod)
	GCGrace      time.Duration // a port must stay orphaned this long before it is deleted (default GCPeriod)
	GCMaxDeletes int           // per pass (default DefaultGCMaxDeletes)
	GCDeleteRate float64       // ports per second (default DefaultGCDeleteRate)

	// Recorder records Events; by default one that writes to the API server.
	Recorder record.EventRecorder
	// Registerer gets the controller's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Now is the clock of the GC marks (tests).
	Now func() time.Time
}

// Controller runs the namespace subnet driver and the port GC.
type Controller struct {
	cfg      *config.Config
	kube     kubernetes.Interface
	nc       Neutron
	kn       *kuryrnet.Client
	recorder record.EventRecorder
	metrics  *metrics
	now      func() time.Time

	project    string
	namespaced bool // pod_subnets_driver = namespace
	excluded   []string
	selector   labels.Selector
	workers    int
	clusterTag string

	factory    informers.SharedInformerFactory
	nsLister   corelisters.NamespaceLister
	nodeLister corelisters.NodeLister
	podLister  corelisters.PodLister
	knInformer cache.SharedIndexInformer
	knLister   kuryrnet.Lister
	synced     []cache.InformerSynced

	queue workqueue.TypedRateLimitingInterface[string]
	gc    *gc

	ready    atomic.Bool
	poolInfo atomic.Pointer[neutron.SubnetPool]
	written  sync.Map // writtenKey(KuryrNetwork) -> writtenStatus
}

// New checks the options and builds the informers; Run starts them.
func New(o Options) (*Controller, error) {
	if o.Config == nil || o.Kube == nil || o.Neutron == nil {
		return nil, errors.New("controller: Config, Kube and Neutron are required")
	}
	cfg := o.Config
	c := &Controller{cfg: cfg, kube: o.Kube, nc: o.Neutron, project: o.Project, now: o.Now,
		namespaced: cfg.Kubernetes.PodSubnetsDriver == "namespace", excluded: o.ExcludedNamespaces,
		workers: o.Workers, selector: o.NamespaceSelector, clusterTag: neutron.ClusterTag(cfg.Kubernetes.ClusterName)}
	if c.now == nil {
		c.now = time.Now
	}
	if c.excluded == nil {
		c.excluded = DefaultExcludedNamespaces
	}
	if c.workers <= 0 {
		c.workers = defaultWorkers
	}
	if c.project == "" {
		c.project = cfg.NeutronDefaults.Project
	}
	if c.namespaced {
		if cfg.NamespaceSubnet.PodSubnetPool == "" {
			return nil, errors.New("[namespace_subnet] pod_subnet_pool is required with [kubernetes] pod_subnets_driver = namespace: namespace subnets are allocated from it")
		}
		if c.project == "" {
			return nil, errors.New("[neutron_defaults] project is required with [kubernetes] pod_subnets_driver = namespace (the credentials name no project either)")
		}
		if o.Dynamic == nil {
			return nil, errors.New("controller: a dynamic client is required with pod_subnets_driver = namespace")
		}
	}
	var err error
	if c.metrics, err = newMetrics(o.Registerer); err != nil {
		return nil, err
	}
	c.recorder = o.Recorder
	if c.recorder == nil {
		b := record.NewBroadcaster()
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: o.Kube.CoreV1().Events("")})
		c.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component})
	}

	resync := o.Resync
	if resync <= 0 {
		resync = defaultResync
	}
	c.factory = informers.NewSharedInformerFactory(o.Kube, resync)
	nodes := c.factory.Core().V1().Nodes()
	pods := c.factory.Core().V1().Pods()
	if err := pods.Informer().SetTransform(slimPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	c.nodeLister, c.podLister = nodes.Lister(), pods.Lister() // the pod lister is indexed by namespace
	c.synced = []cache.InformerSynced{nodes.Informer().HasSynced, pods.Informer().HasSynced}

	c.gc = newGC(c, o)
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(any) { c.gc.trigger() }, // mark the node's ports now: they go one grace later
	}); err != nil {
		return nil, err
	}

	if c.namespaced {
		c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kuryr-namespaces"})
		nsInf := c.factory.Core().V1().Namespaces()
		c.nsLister = nsInf.Lister()
		c.knInformer = kuryrnet.NewInformer(o.Dynamic, "", resync, nil)
		c.knLister = kuryrnet.NewLister(c.knInformer)
		c.kn = kuryrnet.NewClient(o.Dynamic, fieldManager)
		c.synced = append(c.synced, nsInf.Informer().HasSynced, c.knInformer.HasSynced)
		if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueNamespace,
			UpdateFunc: func(_, obj any) { c.enqueueNamespace(obj) },
			DeleteFunc: c.enqueueNamespace,
		}); err != nil {
			return nil, err
		}
		if _, err := c.knInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueKuryrNetwork,
			UpdateFunc: func(_, obj any) { c.enqueueKuryrNetwork(obj) },
			DeleteFunc: c.enqueueKuryrNetwork,
		}); err != nil {
			return nil, err
		}
		// A namespace waiting for its pods to go before its network is deleted is retried when
		// the last one goes.
		if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if p, ok := obj.(*corev1.Pod); ok {
					c.queue.Add(p.Namespace)
				}
			},
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// slimPod keeps what the controller reads of a pod: a cluster-wide pod cache costs a fraction of
// the full objects.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	out.DeletionTimestamp = p.DeletionTimestamp
	if v, ok := p.Annotations[PortAnnotation]; ok {
		out.Annotations = map[string]string{PortAnnotation: v}
	}
	out.Spec.NodeName, out.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	out.Status.Phase = p.Status.Phase
	return out, nil
}

func (c *Controller) enqueueNamespace(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if ns, ok := obj.(*corev1.Namespace); ok {
		c.queue.Add(ns.Name)
	}
}

func (c *Controller) enqueueKuryrNetwork(obj any) {
	if k, ok := kuryrnet.FromObject(obj); ok {
		c.queue.Add(k.Namespace)
	}
}

// Ready reports whether the caches have synced and the workers run.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Run starts the informers, the namespace workers and the GC, and blocks until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	logger := klog.FromContext(ctx)
	if c.queue != nil {
		defer c.queue.ShutDown()
	}
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if c.knInformer != nil {
		go c.knInformer.Run(ctx.Done())
	}
	logger.Info("Waiting for informer caches to sync")
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("informer caches did not sync: %w", context.Cause(ctx))
	}
	if c.namespaced {
		for range c.workers {
			go wait.UntilWithContext(ctx, c.runWorker, time.Second)
		}
	}
	go c.gc.run(ctx)
	c.ready.Store(true)
	logger.Info("kuryr-controller running", "namespaceSubnets", c.namespaced, "workers", c.workers,
		"gcPeriod", c.gc.period, "gcGrace", c.gc.grace, "population", c.cfg.Kubernetes.PopulationEnabled())
	<-ctx.Done()
	c.ready.Store(false)
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextWorkItem(ctx) {
	}
}

func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "namespace", key)
	err := c.syncNamespace(klog.NewContext(ctx, logger), key)
	var ra *retryAfter
	switch {
	case err == nil:
		c.queue.Forget(key)
	case errors.As(err, &ra):
		logger.V(2).Info("Namespace sync waits", "reason", ra.reason, "retryAfter", ra.after)
		c.queue.Forget(key)
		c.queue.AddAfter(key, ra.after)
	default:
		utilruntime.HandleErrorWithContext(ctx, err, "Namespace sync failed, retrying", "namespace", key)
		c.queue.AddRateLimited(key)
	}
	return true
}

// retryAfter asks for the key again after a delay, without counting a failure: the sync waits
// for something outside its control (pods to go).
type retryAfter struct {
	after  time.Duration
	reason string
}

func (r *retryAfter) Error() string { return fmt.Sprintf("retry after %s: %s", r.after, r.reason) }

func (c *Controller) isExcluded(ns string) bool { return slices.Contains(c.excluded, ns) }
