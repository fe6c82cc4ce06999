package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// namespacePools is what NamespaceNetworks needs of the pool driver.
type namespacePools interface {
	PopulateEmpty(ctx context.Context, key pool.Key, subnetIDs []string, sgs pool.SGSet, n int) (int, error)
	Retire(ctx context.Context, key pool.Key) (int, error)
}

// subnetSource reads what a namespace's pods need from Neutron (neutron.Client).
type subnetSource interface {
	SubnetDetails(ctx context.Context, id string) (neutron.SubnetDetails, error)
	DefaultSecurityGroup(ctx context.Context, project string) (string, error)
}

// NamespaceNetworksOptions configure NamespaceNetworks.
type NamespaceNetworksOptions struct {
	// Node is the node part of this agent's pool keys (pool.Driver.Node).
	Node string
	// SGs are [neutron_defaults] pod_security_groups; empty: the project's default group.
	SGs pool.SGSet
	// PopulateCount is how many ports to put in the empty pool of a KuryrNetwork whose status says
	// populated (kuryrnet.PopulateCount); 0 when the population handler is disabled.
	PopulateCount int
	// Fallback is the network of the pods of Excluded namespaces ([neutron_defaults] pod_subnet);
	// nil when it is not configured.
	Fallback *PodNetwork
	// Excluded namespaces get no KuryrNetwork from kuryr-controller.
	Excluded []string
	// Wait bounds how long Resolve waits for a namespace's KuryrNetwork to be ready.
	Wait time.Duration
}

// NamespaceNetworks is kuryr's namespace subnet driver on the node ([kubernetes]
// pod_subnets_driver = namespace): a pod gets the network and subnet kuryr-controller made for its
// namespace, recorded in the namespace's KuryrNetwork. It watches KuryrNetworks and reads a ready
// subnet's details from Neutron as soon as it appears, so that ADD answers from memory. It also
// runs the agents' side of pre-population and teardown (docs/controller.md §2): it fills this
// node's empty pool for a populated KuryrNetwork, and retires the pool when the namespace goes.
type NamespaceNetworks struct {
	o        NamespaceNetworksOptions
	pools    namespacePools
	neutron  subnetSource
	excluded map[string]bool
	informer cache.SharedIndexInformer
	lister   kuryrnet.Lister
	queue    workqueue.TypedRateLimitingInterface[string]

	mu         sync.Mutex
	nets       map[string]nsNetwork // by namespace
	changed    chan struct{}        // closed and replaced whenever nets changes: wakes Resolve
	defaultSGs map[string]pool.SGSet
	populated  map[pool.Key]bool // pre-populated (or found not empty) since start
}

// nsNetwork is a namespace's network as the agent knows it.
type nsNetwork struct {
	net      PodNetwork
	deleting bool // the KuryrNetwork is being deleted: its pool is retired
}

// NewNamespaceNetworks watches the KuryrNetworks of every namespace through dyn.
func NewNamespaceNetworks(dyn dynamic.Interface, nc subnetSource, pools namespacePools, o NamespaceNetworksOptions) *NamespaceNetworks {
	n := &NamespaceNetworks{
		o: o, pools: pools, neutron: nc, excluded: make(map[string]bool),
		informer: kuryrnet.NewInformer(dyn, "", 10*time.Minute, nil),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kuryrnetworks"}),
		nets: make(map[string]nsNetwork), changed: make(chan struct{}),
		defaultSGs: make(map[string]pool.SGSet), populated: make(map[pool.Key]bool),
	}
	for _, ns := range o.Excluded {
		n.excluded[ns] = true
	}
	n.lister = kuryrnet.NewLister(n.informer)
	enqueue := func(obj any) {
		if k, ok := kuryrnet.FromObject(obj); ok {
			n.queue.Add(k.Namespace + "/" + k.Name)
		}
	}
	_, _ = n.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	})
	return n
}

// Run watches KuryrNetworks with workers until ctx is done. Start it once the pools are loaded
// (pool.Driver.Recover): pre-population only fills pools that are still empty then.
func (n *NamespaceNetworks) Run(ctx context.Context, workers int) {
	defer n.queue.ShutDown()
	go n.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), n.informer.HasSynced) {
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for n.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	n.queue.ShutDown()
	wg.Wait()
}

func (n *NamespaceNetworks) processNext(ctx context.Context) bool {
	key, quit := n.queue.Get()
	if quit {
		return false
	}
	defer n.queue.Done(key)
	log := klog.FromContext(ctx).WithValues("kuryrnetwork", key)
	if err := n.sync(klog.NewContext(ctx, log), key); err != nil {
		log.Error(err, "KuryrNetwork sync failed; retrying", "attempt", n.queue.NumRequeues(key)+1)
		n.queue.AddRateLimited(key)
		return true
	}
	n.queue.Forget(key)
	return true
}

// sync brings what the agent knows of one KuryrNetwork, and its pool, in line with the object.
func (n *NamespaceNetworks) sync(ctx context.Context, key string) error {
	namespace, name, _ := strings.Cut(key, "/")
	kn, err := n.lister.Get(namespace, name)
	if apierrors.IsNotFound(err) {
		return n.forget(ctx, namespace)
	}
	if err != nil {
		return err
	}
	ns := kn.Spec.NsName
	if ns == "" {
		ns = kn.Namespace
	}
	if kn.DeletionTimestamp != nil {
		return n.retire(ctx, ns, n.keyOf(kn))
	}
	if !kn.Ready() {
		return nil
	}
	net, err := n.network(ctx, kn)
	if err != nil {
		return err
	}
	n.set(ns, nsNetwork{net: net})
	if n.o.PopulateCount <= 0 || !kn.Populate() {
		return nil
	}
	pk := n.keyOf(kn)
	n.mu.Lock()
	done := n.populated[pk]
	n.mu.Unlock()
	if done {
		return nil
	}
	created, err := n.pools.PopulateEmpty(ctx, pk, net.SubnetIDs, net.SGs, n.o.PopulateCount)
	if err != nil {
		return fmt.Errorf("pre-populate the pool of namespace %s: %w", ns, err)
	}
	n.mu.Lock()
	n.populated[pk] = true
	n.mu.Unlock()
	if created > 0 {
		klog.FromContext(ctx).Info("Pool of a namespace subnet pre-populated", "namespace", ns, "pool", pk.String(), "ports", created)
	} else {
		klog.FromContext(ctx).V(2).Info("Pool of a namespace subnet already holds ports; not pre-populated", "namespace", ns, "pool", pk.String())
	}
	return nil
}

func (n *NamespaceNetworks) keyOf(kn *kuryrnet.KuryrNetwork) pool.Key {
	return pool.Key{Node: n.o.Node, Project: kn.Spec.ProjectID, Network: kn.Status.NetID}
}

// network reads the subnet of a ready KuryrNetwork (cached by the Neutron client) and the
// security groups its pods get.
func (n *NamespaceNetworks) network(ctx context.Context, kn *kuryrnet.KuryrNetwork) (PodNetwork, error) {
	sub, err := n.neutron.SubnetDetails(ctx, kn.Status.SubnetID)
	if err != nil {
		return PodNetwork{}, fmt.Errorf("subnet %s of namespace %s: %w", kn.Status.SubnetID, kn.Spec.NsName, err)
	}
	if sub.NetworkID != kn.Status.NetID {
		return PodNetwork{}, fmt.Errorf("KuryrNetwork %s/%s: subnet %s is on network %s, not on status.netId %s",
			kn.Namespace, kn.Name, sub.ID, sub.NetworkID, kn.Status.NetID)
	}
	sgs, err := n.sgs(ctx, kn.Spec.ProjectID)
	if err != nil {
		return PodNetwork{}, err
	}
	return podNetwork(kn.Spec.ProjectID, sub, sgs), nil
}

// sgs are the configured pod security groups, or the project's default group: what Neutron gives
// a port created without any, so that pool ports are grouped under the set they really have.
func (n *NamespaceNetworks) sgs(ctx context.Context, project string) (pool.SGSet, error) {
	if n.o.SGs != "" {
		return n.o.SGs, nil
	}
	n.mu.Lock()
	sgs, ok := n.defaultSGs[project]
	n.mu.Unlock()
	if ok {
		return sgs, nil
	}
	def, err := n.neutron.DefaultSecurityGroup(ctx, project)
	if err != nil {
		return "", fmt.Errorf("[neutron_defaults] pod_security_groups is empty: %w", err)
	}
	sgs = pool.NewSGSet(def)
	n.mu.Lock()
	n.defaultSGs[project] = sgs
	n.mu.Unlock()
	return sgs, nil
}

// retire marks ns as being deleted and retires this node's pool for its network: no new port for
// its pods, the free ones deleted now, the others when their pods release them.
func (n *NamespaceNetworks) retire(ctx context.Context, ns string, key pool.Key) error {
	n.mu.Lock()
	cur, known := n.nets[ns]
	n.mu.Unlock()
	if key.Network == "" && known {
		key = pool.Key{Node: n.o.Node, Project: cur.net.Project, Network: cur.net.NetworkID}
	}
	n.set(ns, nsNetwork{net: cur.net, deleting: true})
	if key.Network == "" {
		return nil // it never got a network: no pool
	}
	deleted, err := n.pools.Retire(ctx, key)
	if err != nil {
		return fmt.Errorf("retire the pool of namespace %s: %w", ns, err)
	}
	klog.FromContext(ctx).Info("Namespace being deleted: its pool is retired", "namespace", ns, "pool", key.String(), "portsDeleted", deleted)
	return nil
}

// forget is for a KuryrNetwork that is gone: its pool is retired (if the deletion was missed) and
// the namespace forgotten, so that a namespace made again under the same name starts afresh.
func (n *NamespaceNetworks) forget(ctx context.Context, ns string) error {
	n.mu.Lock()
	cur, known := n.nets[ns]
	n.mu.Unlock()
	if !known {
		return nil
	}
	if !cur.deleting {
		if err := n.retire(ctx, ns, pool.Key{}); err != nil {
			return err
		}
	}
	n.mu.Lock()
	delete(n.nets, ns)
	delete(n.populated, pool.Key{Node: n.o.Node, Project: cur.net.Project, Network: cur.net.NetworkID})
	n.mu.Unlock()
	return nil
}

func (n *NamespaceNetworks) set(ns string, e nsNetwork) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nets[ns] = e
	close(n.changed)
	n.changed = make(chan struct{})
}

// errNoNamespaceNetwork is why a pod of a namespace without a ready KuryrNetwork gets no port.
var errNoNamespaceNetwork = errors.New("no ready KuryrNetwork")

// Resolve returns the network of the pod's namespace. It answers from memory; for a namespace
// whose KuryrNetwork is not ready yet (a pod created right after its namespace) it waits up to
// Wait for kuryr-controller to finish it.
func (n *NamespaceNetworks) Resolve(ctx context.Context, pod PodRef) (PodNetwork, error) {
	ns := pod.Namespace
	if n.excluded[ns] || ns == "" {
		if n.o.Fallback != nil {
			return *n.o.Fallback, nil
		}
		return PodNetwork{}, fmt.Errorf("namespace %q gets no KuryrNetwork from kuryr-controller, and [neutron_defaults] pod_subnet is not set for its pods", ns)
	}
	ctx, cancel := context.WithTimeout(ctx, n.o.Wait)
	defer cancel()
	for {
		n.mu.Lock()
		e, ok := n.nets[ns]
		changed := n.changed
		n.mu.Unlock()
		switch {
		case ok && e.deleting:
			return PodNetwork{}, fmt.Errorf("namespace %s is being deleted: its network is going away", ns)
		case ok:
			return e.net, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return PodNetwork{}, fmt.Errorf("namespace %s: %w after %s (kuryr-controller makes it: is it running?)", ns, errNoNamespaceNetwork, n.o.Wait)
		}
	}
}
