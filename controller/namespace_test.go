package controller

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

func TestNewRequiresSubnetPool(t *testing.T) {
	f := newFixture(t)
	f.cfg.Kubernetes.PodSubnetsDriver = "namespace"
	_, err := New(f.options())
	if err == nil || !strings.Contains(err.Error(), "[namespace_subnet] pod_subnet_pool") {
		t.Fatalf("New without pod_subnet_pool: %v; want an error naming [namespace_subnet] pod_subnet_pool", err)
	}
	f.cfg.NamespaceSubnet.PodSubnetPool = f.pool.ID
	f.cfg.NeutronDefaults.Project = ""
	if _, err := New(f.options()); err == nil || !strings.Contains(err.Error(), "[neutron_defaults] project") {
		t.Fatalf("New without a project: %v; want an error naming [neutron_defaults] project", err)
	}
}

// TestNamespaceLifecycle: a namespace gets a tagged network and subnet from the pool, attached
// to the pod router, recorded in its KuryrNetwork (finalizer first, populated with the handler
// on); deleting the namespace deletes the ports (subports detached), the router interface, the
// subnet and the network, then the finalizer, and the KuryrNetwork goes.
func TestNamespaceLifecycle(t *testing.T) {
	f := newFixture(t)
	f.namespaced(true)
	f.fn.SetExtension("router", true)
	router := f.fn.AddRouter("pod-router", f.fx.Project)
	f.cfg.NamespaceSubnet.PodRouter = router
	c := f.newController(f.options())
	f.run(c)

	ns := f.createNamespace("team-a", map[string]string{"team": "a"})
	var kn *kuryrnet.KuryrNetwork
	f.eventually("KuryrNetwork status filled", func() bool {
		k, err := f.kuryrNetwork("team-a")
		kn = k
		return err == nil && k.Status.RouterID != "" && k.Status.Populated
	})
	if !kn.HasFinalizer() || ownerUID(kn) != ns.UID || kn.Spec.NsName != "team-a" || kn.Spec.ProjectID != f.fx.Project ||
		kn.Spec.NsLabels["team"] != "a" || kn.Status.NsLabels["team"] != "a" {
		t.Fatalf("KuryrNetwork %+v", kn)
	}
	st := kn.Status
	nets, err := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{IDs: []string{st.NetID}})
	if err != nil || len(nets) != 1 {
		t.Fatalf("network %s: %v, %v", st.NetID, nets, err)
	}
	if n := nets[0]; n.Name != "team-a" || n.Description != string(ns.UID) || !hasAll(n.Tags, []string{neutron.ClusterTag(f.cfg.Kubernetes.ClusterName), "kuryr-test"}) {
		t.Fatalf("network %+v: want name team-a, description the namespace UID, cluster and resource tags", n)
	}
	subs, err := f.nc.ListSubnets(f.ctx, neutron.SubnetFilter{NetworkID: st.NetID})
	if err != nil || len(subs) != 1 || subs[0].ID != st.SubnetID || subs[0].CIDR != st.SubnetCIDR || subs[0].SubnetPoolID != f.pool.ID {
		t.Fatalf("subnets of %s: %+v, %v; want one from pool %s recorded in the status %+v", st.NetID, subs, err, f.pool.ID, st)
	}
	if !netip.MustParsePrefix("10.100.0.0/16").Contains(netip.MustParsePrefix(st.SubnetCIDR).Addr()) {
		t.Fatalf("subnet CIDR %s is not from the pool", st.SubnetCIDR)
	}
	if got := f.fn.RouterSubnets(router); !slices.Equal(got, []string{st.SubnetID}) || st.RouterID != router {
		t.Fatalf("router %s subnets %v, status router %q", router, got, st.RouterID)
	}
	f.sawEvent(ReasonNetworkReady, st.SubnetCIDR)

	// Steady state: a resync or a label change makes no Neutron call but the label follows.
	before := f.fn.Requests()
	ns.Labels["team"] = "b"
	if _, err := f.kube.CoreV1().Namespaces().Update(f.ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("labels followed", func() bool {
		k, err := f.kuryrNetwork("team-a")
		return err == nil && k.Spec.NsLabels["team"] == "b" && k.Status.NsLabels["team"] == "b"
	})
	if after := f.fn.Requests(); after["POST /v2.0/networks"] != before["POST /v2.0/networks"] || after["POST /v2.0/subnets"] != before["POST /v2.0/subnets"] ||
		after["GET /v2.0/networks"] != before["GET /v2.0/networks"] {
		t.Fatalf("a label change made Neutron calls: before %v after %v", before, after)
	}

	// Pool ports of an agent on the namespace network: one bare, one subport of a trunk.
	plain := f.client()
	ps, err := plain.CreatePorts(f.ctx, []neutron.PortSpec{
		{NetworkID: st.NetID, ProjectID: f.fx.Project, SubnetIDs: []string{st.SubnetID}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr},
		{NetworkID: st.NetID, ProjectID: f.fx.Project, SubnetIDs: []string{st.SubnetID}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.AttachPorts(f.ctx, f.fx.Trunks[0].Trunk, []string{ps[1].ID}, 0); err != nil {
		t.Fatal(err)
	}

	if err := f.kube.CoreV1().Namespaces().Delete(f.ctx, "team-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("KuryrNetwork gone", func() bool {
		_, err := f.kuryrNetwork("team-a")
		return apierrors.IsNotFound(err)
	})
	if nets, err := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{IDs: []string{st.NetID}}); err != nil || len(nets) != 0 {
		t.Fatalf("network %s after the namespace went: %+v, %v", st.NetID, nets, err)
	}
	for _, p := range ps {
		if _, err := plain.GetPort(f.ctx, p.ID); !errors.Is(err, neutron.ErrNotFound) {
			t.Fatalf("port %s of the namespace network: %v; want deleted", p.ID, err)
		}
	}
	if tr, err := plain.GetTrunk(f.ctx, f.fx.Trunks[0].Trunk); err != nil || len(tr.SubPorts) != 0 {
		t.Fatalf("trunk after teardown: %+v, %v; want no subports", tr, err)
	}
	if got := f.fn.RouterSubnets(router); len(got) != 0 {
		t.Fatalf("router still has interfaces on %v", got)
	}
	f.sawEvent(ReasonNetworkDeleted, st.NetID)
	if n := counterValue(t, c.metrics.neutronCreated.WithLabelValues("network")); n != 1 {
		t.Fatalf("networks created: %v, want 1", n)
	}
}

// TestNamespaceFinalizerBeforeNeutron: the KuryrNetwork carries the finalizer before the first
// Neutron resource exists, so a namespace deleted at any point cannot leak one.
func TestNamespaceFinalizerBeforeNeutron(t *testing.T) {
	f := newFixture(t)
	f.namespaced(false)
	c := f.newController(f.options())
	// Neutron refuses the network: only the KuryrNetwork with its finalizer exists.
	f.fn.FailNext("POST", "/v2.0/networks", 500, 1000)
	f.run(c)
	f.createNamespace("early", nil)
	f.eventually("KuryrNetwork with finalizer", func() bool {
		k, err := f.kuryrNetwork("early")
		return err == nil && k.HasFinalizer()
	})
	f.sawEvent("Warning", ReasonNetworkFailed)
	if nets, _ := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{Name: "early"}); len(nets) != 0 {
		t.Fatalf("networks %+v although Neutron refused them", nets)
	}
	if err := f.kube.CoreV1().Namespaces().Delete(f.ctx, "early", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("KuryrNetwork gone", func() bool {
		_, err := f.kuryrNetwork("early")
		return apierrors.IsNotFound(err)
	})
}

// TestNamespaceAdoptsNetwork: a network a crashed controller created (found by name and
// description = namespace UID) is used, not duplicated, and gets its tags.
func TestNamespaceAdoptsNetwork(t *testing.T) {
	f := newFixture(t)
	f.namespaced(false)
	ns := f.createNamespace("adopt", nil)
	old, err := f.nc.CreateNetwork(f.ctx, neutron.NetworkSpec{Name: "adopt", Description: string(ns.UID), ProjectID: f.fx.Project})
	if err != nil {
		t.Fatal(err)
	}
	// A network of an earlier namespace of the same name is not taken.
	if _, err := f.nc.CreateNetwork(f.ctx, neutron.NetworkSpec{Name: "adopt", Description: "uid-of-an-older-namespace", ProjectID: f.fx.Project}); err != nil {
		t.Fatal(err)
	}
	f.run(f.newController(f.options()))
	var kn *kuryrnet.KuryrNetwork
	f.eventually("status", func() bool {
		k, err := f.kuryrNetwork("adopt")
		kn = k
		return err == nil && k.Status.SubnetID != ""
	})
	if kn.Status.NetID != old.ID {
		t.Fatalf("status.netId %s, want the existing network %s", kn.Status.NetID, old.ID)
	}
	if kn.Status.Populated {
		t.Fatal("populated is true without the population handler")
	}
	nets, _ := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{IDs: []string{old.ID}})
	if len(nets) != 1 || !slices.Contains(nets[0].Tags, neutron.ClusterTag(f.cfg.Kubernetes.ClusterName)) {
		t.Fatalf("adopted network %+v: want the cluster tag", nets)
	}
}

// TestNamespaceWaitsForPods: while a pod of the namespace exists its network is not deleted;
// when the last pod goes, it is.
func TestNamespaceWaitsForPods(t *testing.T) {
	f := newFixture(t)
	f.namespaced(false)
	f.run(f.newController(f.options()))
	f.createNamespace("busy", nil)
	var kn *kuryrnet.KuryrNetwork
	f.eventually("status", func() bool {
		k, err := f.kuryrNetwork("busy")
		kn = k
		return err == nil && k.Status.SubnetID != ""
	})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "busy", UID: "pod-uid-1"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	if _, err := f.kube.CoreV1().Pods("busy").Create(f.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A host-network pod uses no port: it does not hold the network back.
	hn := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hn", Namespace: "busy"}, Spec: corev1.PodSpec{HostNetwork: true}}
	if _, err := f.kube.CoreV1().Pods("busy").Create(f.ctx, hn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kuryrnet.NewClient(f.dyn, "test").Delete(f.ctx, "busy", "busy", ""); err != nil {
		t.Fatal(err)
	}
	f.sawEvent(ReasonNetworkWaiting, "1 pods")
	if nets, _ := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{IDs: []string{kn.Status.NetID}}); len(nets) != 1 {
		t.Fatal("the network was deleted while a pod of the namespace exists")
	}
	if err := f.kube.CoreV1().Pods("busy").Delete(f.ctx, "p1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("network deleted and KuryrNetwork recreated for the living namespace", func() bool {
		nets, _ := f.nc.ListNetworks(f.ctx, neutron.NetworkFilter{IDs: []string{kn.Status.NetID}})
		k, err := f.kuryrNetwork("busy")
		return len(nets) == 0 && err == nil && k.Status.NetID != kn.Status.NetID && k.Status.SubnetID != ""
	})
}

// TestSyncNamespaceExcluded: kube-system gets nothing.
func TestSyncNamespaceExcluded(t *testing.T) {
	f := newFixture(t)
	f.namespaced(true)
	f.run(f.newController(f.options()))
	f.createNamespace("kube-system", nil)
	f.createNamespace("probe", nil)
	f.eventually("probe network", func() bool {
		k, err := f.kuryrNetwork("probe")
		return err == nil && k.Status.SubnetID != ""
	})
	if _, err := f.kuryrNetwork("kube-system"); !apierrors.IsNotFound(err) {
		t.Fatalf("kube-system KuryrNetwork: %v; want none", err)
	}
}
