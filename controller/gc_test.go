package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

func TestOrphan(t *testing.T) {
	live := NewLive(
		[]*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}},
		[]*corev1.Pod{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "live", UID: "uid-live"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "annotated", UID: "uid-ann",
				Annotations: map[string]string{PortAnnotation: `{"portId":"port-ann","mac":"fa:16:3e:00:00:01","ips":["10.0.0.5"],"ifName":"eth0"}`}}},
		})
	port := func(name, deviceID, owner string, tags ...string) neutron.Port {
		return neutron.Port{ID: "p", Name: name, DeviceID: deviceID, DeviceOwner: owner, Tags: tags}
	}
	n1, gone := neutron.NodeTag("n1"), neutron.NodeTag("gone")
	const kuryr, sub = pool.DeviceOwnerKuryr, pool.DeviceOwnerSubport
	tests := []struct {
		name string
		p    neutron.Port
		want Reason
	}{
		{"pool port of a live node", port(pool.AvailablePortName, "", kuryr, n1), ""},
		{"pool port of a deleted node", port(pool.AvailablePortName, "", kuryr, gone), ReasonNodeGone},
		{"subport of a deleted node", port(pool.AvailablePortName, "", sub, gone), ReasonNodeGone},
		{"detached subport (no owner) of a deleted node", port(pool.AvailablePortName, "", "", gone), ReasonNodeGone},
		{"live pod by device_id, on a deleted node", port("ns/renamed", "uid-live", sub, gone), ""},
		{"live pod by name, on a deleted node", port("ns/live", "uid-of-an-older-pod", kuryr, gone), ""},
		{"live pod by annotation, on a deleted node", neutron.Port{ID: "port-ann", Name: "ns/other", DeviceID: "uid-x", DeviceOwner: kuryr, Tags: []string{gone}}, ""},
		{"pod gone, live node", port("ns/dead", "uid-dead", kuryr, n1), ReasonPodGone},
		{"pod gone, subport", port("ns/dead", "uid-dead", sub, n1), ReasonPodGone},
		{"pod gone, no node tag", port("ns/dead", "uid-dead", kuryr), ReasonPodGone},
		{"pod name but no device_id", port("ns/dead", "", kuryr, n1), ""},
		{"not a pod name", port("something", "uid-dead", kuryr, n1), ""},
		{"two slashes", port("a/b/c", "uid-dead", kuryr, n1), ""},
		{"empty namespace", port("/pod", "uid-dead", kuryr, n1), ""},
		{"unnamed", port("", "uid-dead", kuryr, n1), ""},
		{"router interface of a deleted node", port("", "router-1", "network:router_interface", gone), ""},
		{"a VM port", port("ns/dead", "uid-dead", "compute:nova", n1), ""},
		{"pool port without node tag", port(pool.AvailablePortName, "", kuryr), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Orphan(tc.p, live); got != tc.want {
				t.Errorf("Orphan(%+v) = %q, want %q", tc.p, got, tc.want)
			}
		})
	}
}

func TestAnnotatedPort(t *testing.T) {
	for _, tc := range []struct{ v, want string }{
		{`{"portId":"abc","mac":"x"}`, "abc"},
		{`{"mac":"x","portId":"def"}`, "def"},
		{`{"portId":""}`, ""},
		{`garbage`, ""},
		{``, ""},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{PortAnnotation: tc.v}}}
		if got := annotatedPort(p); got != tc.want {
			t.Errorf("annotatedPort(%q) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// gcFixture is a controller whose informer caches are filled by hand (not started), so a test
// decides what the cache shows and what the API server answers.
type gcFixture struct {
	*fixture
	c     *Controller
	plain *neutron.Client
}

func newGCFixture(t *testing.T, mod func(*Options)) *gcFixture {
	f := newFixture(t)
	o := f.options()
	if mod != nil {
		mod(&o)
	}
	g := &gcFixture{fixture: f, c: f.newController(o), plain: f.client()}
	return g
}

func (g *gcFixture) addNode(name string) {
	g.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := g.kube.CoreV1().Nodes().Create(g.ctx, n, metav1.CreateOptions{}); err != nil {
		g.t.Fatal(err)
	}
	_ = g.c.factory.Core().V1().Nodes().Informer().GetIndexer().Add(n)
}

func (g *gcFixture) deleteNode(name string) {
	g.t.Helper()
	if err := g.kube.CoreV1().Nodes().Delete(g.ctx, name, metav1.DeleteOptions{}); err != nil {
		g.t.Fatal(err)
	}
	_ = g.c.factory.Core().V1().Nodes().Informer().GetIndexer().Delete(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// addPod creates a pod in the API server, and in the cache when cached.
func (g *gcFixture) addPod(ns, name, uid string, annotations map[string]string, cached bool) {
	g.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Annotations: annotations}}
	if _, err := g.kube.CoreV1().Pods(ns).Create(g.ctx, p, metav1.CreateOptions{}); err != nil {
		g.t.Fatal(err)
	}
	if cached {
		_ = g.c.factory.Core().V1().Pods().Informer().GetIndexer().Add(p)
	}
}

// port creates a port tagged for this cluster and node, as an agent would.
func (g *gcFixture) port(node, name, deviceID string) neutron.Port {
	g.t.Helper()
	tags := append([]string{neutron.ClusterTag(g.cfg.Kubernetes.ClusterName)}, g.cfg.NeutronDefaults.ResourceTags...)
	if node != "" {
		tags = append(tags, neutron.NodeTag(node))
	}
	ps, err := g.plain.CreatePorts(g.ctx, []neutron.PortSpec{{NetworkID: g.fx.PodNetwork, ProjectID: g.fx.Project,
		SubnetIDs: []string{g.fx.PodSubnet}, Name: name, DeviceID: deviceID, DeviceOwner: pool.DeviceOwnerKuryr, Tags: tags}})
	if err != nil {
		g.t.Fatal(err)
	}
	return ps[0]
}

func (g *gcFixture) exists(id string) bool {
	g.t.Helper()
	_, err := g.plain.GetPort(g.ctx, id)
	if err != nil && !errors.Is(err, neutron.ErrNotFound) {
		g.t.Fatal(err)
	}
	return err == nil
}

func (g *gcFixture) pass() passResult {
	g.t.Helper()
	res, err := g.c.gc.pass(g.ctx)
	if err != nil {
		g.t.Fatal(err)
	}
	return res
}

func TestGCNodeGone(t *testing.T) {
	g := newGCFixture(t, nil)
	g.addNode("n1")
	g.addNode("n2")
	a := g.port("n1", pool.AvailablePortName, "")
	b := g.port("n1", pool.AvailablePortName, "")
	if _, err := g.plain.AttachPorts(g.ctx, g.fx.Trunks[0].Trunk, []string{b.ID}, 0); err != nil {
		t.Fatal(err)
	}
	g.addPod("ns", "p1", "uid-1", nil, true)
	inUse := g.port("n1", "ns/p1", "uid-1") // a live pod still bound to the deleted node
	other := g.port("n2", pool.AvailablePortName, "")
	otherCluster, err := g.plain.CreatePorts(g.ctx, []neutron.PortSpec{{NetworkID: g.fx.PodNetwork, ProjectID: g.fx.Project,
		SubnetIDs: []string{g.fx.PodSubnet}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr,
		Tags: []string{neutron.ClusterTag("another-cluster"), neutron.NodeTag("n1"), "kuryr-test"}}})
	if err != nil {
		t.Fatal(err)
	}

	if res := g.pass(); res.marked != 0 || res.listed != 4 {
		t.Fatalf("pass with every node alive: %+v; want 4 listed, none marked", res)
	}
	g.deleteNode("n1")
	if res := g.pass(); res.marked != 2 || res.deleted != 0 {
		t.Fatalf("first pass after the node went: %+v; want 2 marked, none deleted", res)
	}
	g.advance(5 * time.Minute)
	if res := g.pass(); res.due != 0 || res.deleted != 0 {
		t.Fatalf("pass within the grace period: %+v; want nothing due", res)
	}
	g.advance(6 * time.Minute)
	if res := g.pass(); res.deleted != 2 || res.failed != 0 {
		t.Fatalf("pass after the grace period: %+v; want 2 deleted", res)
	}
	for _, p := range []neutron.Port{a, b} {
		if g.exists(p.ID) {
			t.Errorf("port %s of the deleted node still exists", p.ID)
		}
	}
	for _, p := range []neutron.Port{inUse, other, otherCluster[0]} {
		if !g.exists(p.ID) {
			t.Errorf("port %s (%s) was deleted", p.ID, p.Name)
		}
	}
	if tr, err := g.plain.GetTrunk(g.ctx, g.fx.Trunks[0].Trunk); err != nil || len(tr.SubPorts) != 0 {
		t.Fatalf("trunk %+v, %v; want the subport detached", tr, err)
	}
	g.sawEvent(ReasonNodePortsDeleted, "Deleted 2 Neutron ports of node n1")
	if n := counterValue(t, g.c.metrics.gcDeleted.WithLabelValues(string(ReasonNodeGone))); n != 2 {
		t.Fatalf("gc_ports_deleted_total{node-gone} = %v, want 2", n)
	}
	if n := counterValue(t, g.c.metrics.gcMarks); n != 0 {
		t.Fatalf("gc_ports_marked = %v after the deletions, want 0", n)
	}
}

// hookNeutron runs a hook before each conditional port delete: another writer acting between
// the GC's verification and its delete.
type hookNeutron struct {
	Neutron
	beforeDelete func(id string)
}

func (h *hookNeutron) DeletePortIf(ctx context.Context, id string, revision int) error {
	if h.beforeDelete != nil {
		h.beforeDelete(id)
	}
	return h.Neutron.DeletePortIf(ctx, id, revision)
}

// TestGCNeverDeletesLivePodPorts: a port whose pod is live when the GC acts is kept, even when the
// pod appeared after the mark and the cache does not show it yet, or when it is only named by the
// agent's annotation; a port an agent changes between the GC's check and its delete is kept.
func TestGCNeverDeletesLivePodPorts(t *testing.T) {
	hook := &hookNeutron{}
	g := newGCFixture(t, func(o *Options) { hook.Neutron = o.Neutron; o.Neutron = hook })
	g.addNode("n1")
	leaked := g.port("n1", "ns/p1", "uid-1")
	late := g.port("n1", "ns/p2", "uid-2")
	annotated := g.port("n1", "ns/p3", "uid-3")
	recycled := g.port("n1", "ns/p5", "uid-5")
	free := g.port("n1", pool.AvailablePortName, "")

	if res := g.pass(); res.marked != 4 {
		t.Fatalf("first pass: %+v; want the 4 pod ports without pods marked", res)
	}
	// After the mark, pods appear in the API server only: the cache lags.
	g.addPod("ns", "p2", "uid-2", nil, false)
	g.addPod("ns", "other", "uid-9", map[string]string{PortAnnotation: `{"portId":"` + annotated.ID + `"}`}, false)
	// The agent recycles p5's port between the GC's verification and its delete.
	hook.beforeDelete = func(id string) {
		if id != recycled.ID {
			return
		}
		name, dev := pool.AvailablePortName, ""
		if _, err := g.plain.UpdatePort(g.ctx, id, 0, neutron.PortUpdate{Name: &name, DeviceID: &dev}); err != nil {
			t.Error(err)
		}
	}
	g.advance(11 * time.Minute)
	res := g.pass()
	if res.deleted != 1 || res.kept != 3 || res.failed != 0 {
		t.Fatalf("pass after the grace period: %+v; want 1 deleted, 3 kept", res)
	}
	if g.exists(leaked.ID) {
		t.Errorf("leaked port %s still exists", leaked.ID)
	}
	for _, p := range []neutron.Port{late, annotated, recycled, free} {
		if !g.exists(p.ID) {
			t.Errorf("port %s (%s) was deleted although in use or changed", p.ID, p.Name)
		}
	}
	g.sawEvent(ReasonLeakedPortDelete, leaked.ID, "ns/p1")
	if n := counterValue(t, g.c.metrics.gcDeleted.WithLabelValues(string(ReasonPodGone))); n != 1 {
		t.Fatalf("gc_ports_deleted_total{pod-gone} = %v, want 1", n)
	}
}

func TestGCBoundedPerPass(t *testing.T) {
	g := newGCFixture(t, func(o *Options) { o.GCMaxDeletes = 2 })
	g.addNode("n1")
	for range 5 {
		g.port("n1", pool.AvailablePortName, "")
	}
	g.deleteNode("n1")
	g.pass()
	g.advance(11 * time.Minute)
	for i, want := range []struct{ deleted, deferred int }{{2, 3}, {2, 1}, {1, 0}} {
		if res := g.pass(); res.deleted != want.deleted || res.deferred != want.deferred {
			t.Fatalf("pass %d: %+v; want %d deleted, %d deferred", i+1, res, want.deleted, want.deferred)
		}
	}
	if ps, _ := g.plain.ListPorts(g.ctx, neutron.PortFilter{Tags: []string{neutron.ClusterTag(g.cfg.Kubernetes.ClusterName)}}); len(ps) != 0 {
		t.Fatalf("%d ports left", len(ps))
	}
}

// TestGCDeletesWithinGracePeriodOfNodeDeletion runs the real loop: a node's deletion triggers a
// pass that marks its ports, and they are deleted one grace period later, not a full GC period.
func TestGCDeletesWithinGracePeriodOfNodeDeletion(t *testing.T) {
	f := newFixture(t)
	o := f.options()
	o.Now, o.GCPeriod, o.GCGrace = nil, time.Hour, 300*time.Millisecond
	c := f.newController(o)
	if _, err := f.kube.CoreV1().Nodes().Create(f.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.run(c)
	g := &gcFixture{fixture: f, c: c, plain: f.client()}
	p := g.port("n1", pool.AvailablePortName, "")
	start := time.Now()
	if err := f.kube.CoreV1().Nodes().Delete(f.ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("port of the deleted node deleted", func() bool { return !g.exists(p.ID) })
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("deleted after %s, before the grace period", d)
	}
}
