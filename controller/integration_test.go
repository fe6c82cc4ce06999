package controller

// Integration tests against the real kube-apiserver (hack/kube-up.sh, KURYR_TEST_KUBECONFIG) and
// the real neutron-server (hack/neutron-up.sh, KURYR_TEST_NEUTRON). Each test works in objects
// of its own (a random cluster tag, namespaces selected by a random label, its own Nodes and
// Lease), so they can share the servers with other tests.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/yaml"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/kubeclient"
	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// realEnv is one integration test's clients of the real servers.
type realEnv struct {
	t    *testing.T
	ctx  context.Context
	rc   *rest.Config
	kube kubernetes.Interface // admin: setup and checks
	dyn  dynamic.Interface
	// The controller's clients: admin, or a ServiceAccount after asServiceAccount.
	ctlKube kubernetes.Interface
	ctlDyn  dynamic.Interface
	fx      fakeneutron.Fixture
	nc      *neutron.Client // the controller's
	aux     *neutron.Client // setup and checks
	cfg     *config.Config
	id      string // random suffix of everything this test creates
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	kubeconfig := testutil.Kubeconfig(t)
	path := os.Getenv("KURYR_TEST_NEUTRON")
	testutil.Require(t, path != "", "KURYR_TEST_NEUTRON is not set (run hack/neutron-up.sh and export its output)")
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	t.Cleanup(cancel)
	e := &realEnv{t: t, ctx: ctx, id: fmt.Sprintf("%06x", rand.Uint32()&0xffffff)}
	rc, err := kubeclient.Config(ctx, config.KubernetesSection{}, kubeconfig, "kuryr-controller-integration-test")
	if err != nil {
		t.Fatal(err)
	}
	e.rc = rc
	if e.kube, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	if e.dyn, err = dynamic.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	e.ctlKube, e.ctlDyn = e.kube, e.dyn
	if e.fx, err = fakeneutron.LoadFixture(path); err != nil {
		t.Fatal(err)
	}
	newClient := func(qps float64) *neutron.Client {
		c, err := neutron.NewClient(ctx, neutron.ClientOptions{AuthType: neutron.AuthNone, EndpointOverride: e.fx.Endpoint,
			ProjectID: e.fx.Project, QPS: qps, Timeout: 2 * time.Minute}, "kuryr-controller-integration-test")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	e.nc, e.aux = newClient(0), newClient(-1)
	e.cfg = config.Default()
	e.cfg.Kubernetes.ClusterName = "kuryr-it-" + e.id
	e.cfg.NeutronDefaults.Project = e.fx.Project
	e.cfg.NeutronDefaults.ResourceTags = []string{"kuryr-controller-it"}
	return e
}

// installCRD applies daemonset/crd-kuryrnetwork.yaml.
func (e *realEnv) installCRD() {
	e.t.Helper()
	testutil.ApplyCRD(e.ctx, e.t, e.dyn, "../daemonset/crd-kuryrnetwork.yaml", kuryrnet.GVR)
}

// runController runs a controller elected on a Lease of its own until the test ends.
func (e *realEnv) runController(o Options) *Controller {
	e.t.Helper()
	o.Config, o.Kube, o.Dynamic, o.Neutron = e.cfg, e.ctlKube, e.ctlDyn, e.nc
	c, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		done <- RunLeaderElected(ctx, e.ctlKube, LeaderOptions{Namespace: "kube-system", Name: "kuryr-it-" + e.id,
			Identity: "it-" + e.id, RetryPeriod: 200 * time.Millisecond}, func(ctx context.Context) {
			if err := c.Run(ctx); err != nil {
				e.t.Error(err)
			}
		})
	}()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("RunLeaderElected: %v", err)
		}
		_ = e.kube.CoordinationV1().Leases("kube-system").Delete(context.WithoutCancel(e.ctx), "kuryr-it-"+e.id, metav1.DeleteOptions{})
	})
	e.eventually("controller elected and synced", time.Minute, c.Ready)
	return c
}

func (e *realEnv) eventually(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	if err := e.waitFor(what, timeout, cond); err != nil {
		e.t.Fatal(err)
	}
}

// waitFor is eventually for goroutines other than the test's: it returns the failure.
func (e *realEnv) waitFor(what string, timeout time.Duration, cond func() bool) error {
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
	}
	return nil
}

// subnetPool creates a pool with a random /16 of 10.128.0.0/9 for the test.
func (e *realEnv) subnetPool() neutron.SubnetPool {
	e.t.Helper()
	prefix := fmt.Sprintf("10.%d.0.0/16", 128+rand.IntN(127))
	sp, err := e.aux.CreateSubnetPool(e.ctx, "kuryr-it-"+e.id, e.fx.Project, []string{prefix}, 26)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := e.aux.DeleteSubnetPool(context.WithoutCancel(e.ctx), sp.ID); err != nil {
			e.t.Errorf("cleanup: %v (a namespace network was left behind)", err)
		}
	})
	return sp
}

func (e *realEnv) finalizeNamespace(name string) { testutil.FinalizeNamespace(e.ctx, e.kube, name) }

func (e *realEnv) portGone(id string) bool {
	_, err := e.aux.GetPort(e.ctx, id)
	if err != nil && !errors.Is(err, neutron.ErrNotFound) {
		e.t.Fatal(err)
	}
	return errors.Is(err, neutron.ErrNotFound)
}

// events returns "reason: message" of the Events about an object.
func (e *realEnv) events(namespace, kind, name string) []string {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name}.AsSelector().String()
	l, err := e.kube.CoreV1().Events(namespace).List(e.ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range l.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	return out
}

func hasEvent(evs []string, parts ...string) bool {
	return slices.ContainsFunc(evs, func(e string) bool {
		for _, p := range parts {
			if !strings.Contains(e, p) {
				return false
			}
		}
		return true
	})
}

// TestIntegrationNamespaceNetworks: namespaces created on the real API server get a network and a
// subnet from the pool on the real neutron-server, recorded in their KuryrNetwork with populated
// set; deleting them deletes the agents' pool ports (subports detached), the subnet and the
// network, then the finalizer, and the KuryrNetwork goes. Logs the time per namespace.
func TestIntegrationNamespaceNetworks(t *testing.T) {
	e := newRealEnv(t)
	e.installCRD()
	sp := e.subnetPool()
	e.cfg.Kubernetes.PodSubnetsDriver = "namespace"
	e.cfg.NamespaceSubnet.PodSubnetPool = sp.ID
	e.cfg.Kubernetes.EnabledHandlers = append(e.cfg.Kubernetes.EnabledHandlers, "namespace", "kuryrnetwork", "kuryrnetwork_population")
	sel := labels.SelectorFromSet(labels.Set{"kuryr-it": e.id})
	c := e.runController(Options{NamespaceSelector: sel, GCPeriod: time.Hour, Workers: 4})

	const n = 6
	names := make([]string, n+1)
	for i := range names {
		names[i] = fmt.Sprintf("kuryr-it-%s-%d", e.id, i)
		t.Cleanup(func() { e.finalizeNamespace(names[i]) })
	}
	create := func(name string) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kuryr-it": e.id, "team": name}}}
		if _, err := e.kube.CoreV1().Namespaces().Create(e.ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Error(err)
			return
		}
		if err := e.waitFor("KuryrNetwork "+name+" ready and populated", 2*time.Minute, func() bool {
			k, err := kuryrnet.NewClient(e.dyn, "it").Get(e.ctx, name, name)
			return err == nil && k.Ready() && k.Status.Populated
		}); err != nil {
			t.Error(err)
		}
	}
	// One namespace alone, then n at once.
	solo := measure(t, names[n:], create)
	stats0 := e.nc.Stats()
	setup := measure(t, names[:n], create)
	setupReqs := e.nc.Stats().Sub(stats0)

	kns := map[string]*kuryrnet.KuryrNetwork{}
	var ports []string
	for i, name := range names {
		ns, err := e.kube.CoreV1().Namespaces().Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kn, err := kuryrnet.NewClient(e.dyn, "it").Get(e.ctx, name, name)
		if err != nil {
			t.Fatal(err)
		}
		kns[name] = kn
		st := kn.Status
		if !kn.HasFinalizer() || kn.Spec.ProjectID != e.fx.Project || kn.Spec.NsLabels["team"] != name || ownerUID(kn) != ns.UID {
			t.Fatalf("KuryrNetwork %s: %+v", name, kn)
		}
		nets, err := e.aux.ListNetworks(e.ctx, neutron.NetworkFilter{IDs: []string{st.NetID}})
		if err != nil || len(nets) != 1 {
			t.Fatalf("network %s of %s: %+v, %v", st.NetID, name, nets, err)
		}
		if net := nets[0]; net.Name != name || net.Description != string(ns.UID) || !slices.Contains(net.Tags, neutron.ClusterTag(e.cfg.Kubernetes.ClusterName)) ||
			!slices.Contains(net.Tags, "kuryr-controller-it") {
			t.Fatalf("network of %s: %+v", name, net)
		}
		subs, err := e.aux.ListSubnets(e.ctx, neutron.SubnetFilter{NetworkID: st.NetID})
		if err != nil || len(subs) != 1 || subs[0].ID != st.SubnetID || subs[0].SubnetPoolID != sp.ID || subs[0].CIDR != st.SubnetCIDR {
			t.Fatalf("subnets of %s: %+v, %v; status %+v", name, subs, err, st)
		}
		if p := netip.MustParsePrefix(st.SubnetCIDR); p.Bits() != 26 || !netip.MustParsePrefix(sp.Prefixes[0]).Contains(p.Addr()) {
			t.Fatalf("subnet %s of %s is not a /26 of pool %v", st.SubnetCIDR, name, sp.Prefixes)
		}
		e.eventually("event "+ReasonNetworkReady+" on "+name, 30*time.Second, func() bool {
			return hasEvent(e.events("default", "Namespace", name), ReasonNetworkReady, st.SubnetCIDR)
		})
		// What agents would have created: pool ports on the namespace network, one a subport.
		ps, err := e.aux.CreatePorts(e.ctx, []neutron.PortSpec{
			{NetworkID: st.NetID, ProjectID: e.fx.Project, SubnetIDs: []string{st.SubnetID}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr},
			{NetworkID: st.NetID, ProjectID: e.fx.Project, SubnetIDs: []string{st.SubnetID}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr},
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := e.aux.AttachPorts(e.ctx, e.fx.Trunks[i%len(e.fx.Trunks)].Trunk, []string{ps[1].ID}, 0); err != nil {
				t.Fatal(err)
			}
		}
		ports = append(ports, ps[0].ID, ps[1].ID)
	}

	remove := func(name string) {
		if err := e.kube.CoreV1().Namespaces().Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
			return
		}
		if err := e.waitFor("KuryrNetwork "+name+" gone", 2*time.Minute, func() bool {
			_, err := kuryrnet.NewClient(e.dyn, "it").Get(e.ctx, name, name)
			return apierrors.IsNotFound(err)
		}); err != nil {
			t.Error(err)
		}
	}
	soloDown := measure(t, names[n:], remove)
	stats1 := e.nc.Stats()
	teardown := measure(t, names[:n], remove)
	teardownReqs := e.nc.Stats().Sub(stats1)
	for _, name := range names {
		if nets, err := e.aux.ListNetworks(e.ctx, neutron.NetworkFilter{IDs: []string{kns[name].Status.NetID}}); err != nil || len(nets) != 0 {
			t.Errorf("network of %s after teardown: %+v, %v", name, nets, err)
		}
		if !hasEvent(e.events("default", "Namespace", name), ReasonNetworkDeleted, kns[name].Status.NetID) {
			t.Errorf("no %s event for %s", ReasonNetworkDeleted, name)
		}
	}
	for _, id := range ports {
		if !e.portGone(id) {
			t.Errorf("pool port %s of a deleted namespace network still exists", id)
		}
	}
	for _, tr := range e.fx.Trunks {
		got, err := e.aux.GetTrunk(e.ctx, tr.Trunk)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range got.SubPorts {
			if slices.Contains(ports, s.PortID) {
				t.Errorf("trunk %s still has subport %s", tr.Trunk, s.PortID)
			}
		}
	}
	t.Logf("one namespace alone: setup (create -> status ready and populated) %s; teardown with 2 pool ports (delete -> KuryrNetwork gone) %s", solo, soloDown)
	t.Logf("%d namespaces created at once, 4 workers: setup per namespace %s", n, setup)
	t.Logf("%d namespaces deleted at once, 2 pool ports each: teardown per namespace %s", n, teardown)
	t.Logf("Neutron requests for %d setups: %d\n%s", n, setupReqs.Requests(), setupReqs)
	t.Logf("Neutron requests for %d teardowns: %d\n%s", n, teardownReqs.Requests(), teardownReqs)
	t.Logf("setup histogram observations: %v", counterValue(t, c.metrics.neutronCreated.WithLabelValues("network")))
}

// measure runs f for every name at once and returns "min/median/max" of their durations.
func measure(t *testing.T, names []string, f func(string)) string {
	var mu sync.Mutex
	var ds []time.Duration
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			f(name)
			mu.Lock()
			ds = append(ds, time.Since(start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %s, median %s, max %s", r(ds[0]), r(ds[len(ds)/2]), r(ds[len(ds)-1]))
}

// port creates a port tagged for this test's cluster and a node on the real server.
func (e *realEnv) port(node, name, deviceID string) neutron.Port {
	e.t.Helper()
	p, err := e.newPort(e.ctx, node, name, deviceID)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// newPort is port for goroutines other than the test's.
func (e *realEnv) newPort(ctx context.Context, node, name, deviceID string) (neutron.Port, error) {
	tags := []string{neutron.ClusterTag(e.cfg.Kubernetes.ClusterName), neutron.NodeTag(node), "kuryr-controller-it"}
	ps, err := e.aux.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: e.fx.PodNetwork, ProjectID: e.fx.Project,
		SubnetIDs: []string{e.fx.PodSubnet}, Name: name, DeviceID: deviceID, DeviceOwner: pool.DeviceOwnerKuryr, Tags: tags}})
	if err != nil {
		return neutron.Port{}, err
	}
	e.t.Cleanup(func() { e.aux.DeletePorts(context.WithoutCancel(ctx), []string{ps[0].ID}) })
	return ps[0], nil
}

func (e *realEnv) node(name string) {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Nodes().Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = e.kube.CoreV1().Nodes().Delete(context.WithoutCancel(e.ctx), name, metav1.DeleteOptions{}) })
}

func (e *realEnv) namespace(name string) {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { e.finalizeNamespace(name) })
}

// pod creates a pod bound to node (nothing runs it: the test cluster has no kubelet).
func (e *realEnv) pod(ctx context.Context, ns, name, node string) (*corev1.Pod, error) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "localhost/pause"}}}}
	return e.kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
}

// deletePod deletes a pod at once (grace 0: no kubelet would confirm a graceful deletion).
func (e *realEnv) deletePod(ctx context.Context, ns, name string) error {
	zero := int64(0)
	err := e.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// TestIntegrationNodeGC: the ports tagged for a Node that is deleted are freed (subports detached,
// ports deleted) one grace period after the deletion, with an Event on the Node; a port of a
// live pod bound to that node is kept.
func TestIntegrationNodeGC(t *testing.T) {
	e := newRealEnv(t)
	const grace = 3 * time.Second
	node, other := "kuryr-it-node-"+e.id, "kuryr-it-other-"+e.id
	e.node(node)
	e.node(other)
	ns := "kuryr-it-gc-" + e.id
	e.namespace(ns)
	live, err := e.pod(e.ctx, ns, "live", node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.deletePod(context.WithoutCancel(e.ctx), ns, "live") })

	var freed []neutron.Port
	for range 4 {
		freed = append(freed, e.port(node, pool.AvailablePortName, ""))
	}
	if _, err := e.aux.AttachPorts(e.ctx, e.fx.Trunks[2].Trunk, []string{freed[0].ID, freed[1].ID}, 0); err != nil {
		t.Fatal(err)
	}
	inUse := e.port(node, ns+"/live", string(live.UID))
	kept := e.port(other, pool.AvailablePortName, "")

	c := e.runController(Options{GCPeriod: time.Hour, GCGrace: grace})
	time.Sleep(500 * time.Millisecond) // the first pass finds nothing to mark
	start := time.Now()
	if err := e.kube.CoreV1().Nodes().Delete(e.ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the deleted node's ports freed", time.Minute, func() bool {
		return slices.IndexFunc(freed, func(p neutron.Port) bool { return !e.portGone(p.ID) }) < 0
	})
	took := time.Since(start)
	if took < grace {
		t.Fatalf("ports deleted %s after the node, before the %s grace period", took, grace)
	}
	for _, p := range []neutron.Port{inUse, kept} {
		if e.portGone(p.ID) {
			t.Errorf("port %s (%s) was deleted", p.ID, p.Name)
		}
	}
	tr, err := e.aux.GetTrunk(e.ctx, e.fx.Trunks[2].Trunk)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tr.SubPorts {
		if s.PortID == freed[0].ID || s.PortID == freed[1].ID {
			t.Errorf("subport %s still on trunk %s", s.PortID, tr.ID)
		}
	}
	e.eventually("event on the Node", 30*time.Second, func() bool {
		return hasEvent(e.events("default", "Node", node), ReasonNodePortsDeleted, "Deleted 4 Neutron ports")
	})
	if n := counterValue(t, c.metrics.gcDeleted.WithLabelValues(string(ReasonNodeGone))); n != 4 {
		t.Fatalf("gc_ports_deleted_total{node-gone} = %v, want 4", n)
	}
	t.Logf("node deleted -> its 4 ports (2 subports) freed in %s (grace %s, GC period 1h)", took.Round(time.Millisecond), grace)
}

// TestIntegrationGCUnderPodChurn: with pods created and deleted continuously, an agent-like
// writer marks ports in use, recycles the ports of deleted pods and leaks some (a crashed agent).
// The GC, on a short period, deletes the leaked ports and never a port a live pod uses: checked
// continuously while the churn runs and at the end.
func TestIntegrationGCUnderPodChurn(t *testing.T) {
	e := newRealEnv(t)
	node := "kuryr-it-churn-" + e.id
	e.node(node)
	ns := "kuryr-it-churn-" + e.id
	e.namespace(ns)
	c := e.runController(Options{GCPeriod: time.Second, GCGrace: time.Second})

	var (
		mu       sync.Mutex
		inUse    = map[string]string{} // port -> pod "ns/name" while the pod lives
		leaked   []string
		violated atomic.Value
	)
	// The pool: ports named available-port, tagged for the node.
	free := make(chan neutron.Port, 64)
	for range 12 {
		free <- e.port(node, pool.AvailablePortName, "")
	}
	churnCtx, stopChurn := context.WithTimeout(e.ctx, 20*time.Second)
	defer stopChurn()
	// Invariant monitor: every port of a live pod exists.
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		ctx := context.WithoutCancel(churnCtx)
		for churnCtx.Err() == nil {
			mu.Lock()
			snapshot := map[string]string{}
			for p, pod := range inUse {
				snapshot[p] = pod
			}
			mu.Unlock()
			for id, pod := range snapshot {
				_, err := e.aux.GetPort(ctx, id)
				mu.Lock()
				stillInUse := inUse[id] == pod
				mu.Unlock()
				if errors.Is(err, neutron.ErrNotFound) && stillInUse {
					violated.Store(fmt.Sprintf("port %s of live pod %s was deleted", id, pod))
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var created, recycled atomic.Int32
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.WithoutCancel(churnCtx) // a step under way completes
			for i := 0; churnCtx.Err() == nil; i++ {
				var p neutron.Port
				select {
				case p = <-free:
				case <-churnCtx.Done():
					return
				}
				name := fmt.Sprintf("p%d-%d", w, i)
				pod, err := e.pod(ctx, ns, name, node)
				if err != nil {
					t.Error(err)
					return
				}
				created.Add(1)
				// The agent marks the port in use once the pod has it.
				full, dev := ns+"/"+name, string(pod.UID)
				up, err := e.aux.UpdatePort(ctx, p.ID, 0, neutron.PortUpdate{Name: &full, DeviceID: &dev})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				inUse[p.ID] = full
				mu.Unlock()
				time.Sleep(time.Duration(200+rand.IntN(1500)) * time.Millisecond)
				mu.Lock()
				delete(inUse, p.ID)
				mu.Unlock()
				if err := e.deletePod(ctx, ns, name); err != nil {
					t.Error(err)
					return
				}
				if i%4 == 3 { // a crashed agent: the port keeps the dead pod's name
					mu.Lock()
					leaked = append(leaked, p.ID)
					mu.Unlock()
					np, err := e.newPort(ctx, node, pool.AvailablePortName, "")
					if err != nil {
						t.Error(err)
						return
					}
					free <- np
					continue
				}
				// DEL: the agent gives the port its pool identity back at once, then reuses it.
				name0, dev0 := pool.AvailablePortName, ""
				if _, err := e.aux.UpdatePort(ctx, p.ID, up.RevisionNumber, neutron.PortUpdate{Name: &name0, DeviceID: &dev0}); err != nil {
					t.Errorf("recycle port %s: %v", p.ID, err)
					return
				}
				recycled.Add(1)
				free <- up
			}
		}()
	}
	wg.Wait()
	stopChurn()
	<-monitorDone
	if v := violated.Load(); v != nil {
		t.Fatal(v)
	}
	if len(leaked) == 0 {
		t.Fatal("the churn leaked no port: nothing was tested")
	}
	e.eventually("leaked ports deleted", time.Minute, func() bool {
		return slices.IndexFunc(leaked, func(id string) bool { return !e.portGone(id) }) < 0
	})
	// Every pool port (recycled or new) survived.
	close(free)
	for p := range free {
		if e.portGone(p.ID) {
			t.Errorf("pool port %s was deleted", p.ID)
		}
	}
	deleted := counterValue(t, c.metrics.gcDeleted.WithLabelValues(string(ReasonPodGone)))
	if int(deleted) != len(leaked) {
		t.Errorf("gc_ports_deleted_total{pod-gone} = %v, want %d (the leaked ports)", deleted, len(leaked))
	}
	if !hasEvent(e.events("default", "Namespace", ns), ReasonLeakedPortDelete) {
		t.Errorf("no %s event on namespace %s", ReasonLeakedPortDelete, ns)
	}
	t.Logf("churn: %d pods, %d ports recycled, %d leaked and deleted by the GC; no port of a live pod touched",
		created.Load(), recycled.Load(), len(leaked))
}

// TestIntegrationLeaderLosesLease runs leaderLosesLease against the real API server.
func TestIntegrationLeaderLosesLease(t *testing.T) {
	e := newRealEnv(t)
	name := "kuryr-it-lease-" + e.id
	t.Cleanup(func() {
		_ = e.kube.CoordinationV1().Leases("kube-system").Delete(context.WithoutCancel(e.ctx), name, metav1.DeleteOptions{})
	})
	leaderLosesLease(t, e.kube, name)
}

// leaderLosesLease: a leader that can no longer renew (another holder took the Lease) stops its
// work and returns ErrLostLease, so the process exits. It needs a real API server: the fake
// clientset does not check resourceVersion, so the leader's optimistic renewal overwrites the
// intruder there.
func leaderLosesLease(t *testing.T, kube kubernetes.Interface, leaseName string) {
	_, ctx := ktesting.NewTestContext(t)
	o := fastLease
	o.Identity, o.Name = "a", leaseName
	stopped := make(chan struct{})
	done := make(chan error, 1)
	leading := make(chan struct{})
	go func() {
		done <- RunLeaderElected(ctx, kube, o, func(ctx context.Context) {
			close(leading)
			<-ctx.Done()
			close(stopped)
		})
	}()
	waitFor(t, leading)
	// Another holder takes the Lease (retried: the leader renews concurrently).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease, err := kube.CoordinationV1().Leases("kube-system").Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		intruder, long := "intruder", int32(3600)
		now := metav1.NowMicro()
		lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime, lease.Spec.AcquireTime = &intruder, &long, &now, &now
		_, err = kube.CoordinationV1().Leases("kube-system").Update(ctx, lease, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, stopped)
	if err := waitFor(t, done); !errors.Is(err, ErrLostLease) {
		t.Fatalf("RunLeaderElected = %v, want ErrLostLease", err)
	}
}

// applyRBAC creates or updates the objects of daemonset/rbac.yaml.
func (e *realEnv) applyRBAC() {
	e.t.Helper()
	raw, err := os.ReadFile("../daemonset/rbac.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	resources := map[string]schema.GroupVersionResource{
		"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
		"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			e.t.Fatalf("daemonset/rbac.yaml: %v", err)
		}
		u := &unstructured.Unstructured{Object: obj}
		gvr, ok := resources[u.GetKind()]
		if !ok {
			e.t.Fatalf("daemonset/rbac.yaml: unexpected kind %q", u.GetKind())
		}
		ri := e.dyn.Resource(gvr).Namespace(u.GetNamespace())
		cur, err := ri.Get(e.ctx, u.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = ri.Create(e.ctx, u, metav1.CreateOptions{})
		case err == nil:
			u.SetResourceVersion(cur.GetResourceVersion())
			_, err = ri.Update(e.ctx, u, metav1.UpdateOptions{})
		}
		if err != nil {
			e.t.Fatalf("apply %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// asServiceAccount makes the controller's clients impersonate a ServiceAccount.
func (e *realEnv) asServiceAccount(namespace, name string) {
	e.t.Helper()
	rc := rest.CopyConfig(e.rc)
	rc.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	var err error
	if e.ctlKube, err = kubernetes.NewForConfig(rc); err != nil {
		e.t.Fatal(err)
	}
	if e.ctlDyn, err = dynamic.NewForConfig(rc); err != nil {
		e.t.Fatal(err)
	}
}

// TestIntegrationRBAC runs the controller as the kuryr-controller ServiceAccount with only the
// permissions of daemonset/rbac.yaml: leader election, a namespace network set up and torn down,
// and a deleted node's ports freed. A permission missing from the manifest fails it.
func TestIntegrationRBAC(t *testing.T) {
	e := newRealEnv(t)
	e.installCRD()
	e.applyRBAC()
	e.asServiceAccount("kube-system", "kuryr-controller")
	if _, err := e.ctlKube.CoreV1().Secrets("kube-system").List(e.ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets as the ServiceAccount: %v; want Forbidden (impersonation is not in effect)", err)
	}
	sp := e.subnetPool()
	e.cfg.Kubernetes.PodSubnetsDriver = "namespace"
	e.cfg.NamespaceSubnet.PodSubnetPool = sp.ID
	e.cfg.Kubernetes.EnabledHandlers = append(e.cfg.Kubernetes.EnabledHandlers, "*kuryrnet*", "namespace")
	node := "kuryr-it-rbac-" + e.id
	e.node(node)
	p := e.port(node, pool.AvailablePortName, "")
	e.runController(Options{NamespaceSelector: labels.SelectorFromSet(labels.Set{"kuryr-it": e.id}), GCPeriod: time.Hour, GCGrace: time.Second})

	name := "kuryr-it-rbac-" + e.id
	t.Cleanup(func() { e.finalizeNamespace(name) })
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kuryr-it": e.id}}}
	if _, err := e.kube.CoreV1().Namespaces().Create(e.ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("KuryrNetwork ready", time.Minute, func() bool {
		k, err := kuryrnet.NewClient(e.dyn, "it").Get(e.ctx, name, name)
		return err == nil && k.Ready() && k.Status.Populated
	})
	e.eventually("event "+ReasonNetworkReady, 30*time.Second, func() bool {
		return hasEvent(e.events("default", "Namespace", name), ReasonNetworkReady)
	})
	if err := e.kube.CoreV1().Nodes().Delete(e.ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the deleted node's port freed", time.Minute, func() bool { return e.portGone(p.ID) })
	if err := e.kube.CoreV1().Namespaces().Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("KuryrNetwork gone", time.Minute, func() bool {
		_, err := kuryrnet.NewClient(e.dyn, "it").Get(e.ctx, name, name)
		return apierrors.IsNotFound(err)
	})
}
