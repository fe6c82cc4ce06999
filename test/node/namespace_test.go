package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// TestNamespacePrePopulation runs kuryr-controller and nested agents for simulated nodes, each
// with a trunk of its own, against the real kube-apiserver and neutron-server
// ([kubernetes] pod_subnets_driver = namespace with the population handlers): a new namespace gets
// a network and subnet, and every node's pool for it is filled with PopulateCount ports, once,
// also for a node that joins later and across an agent restart; deleting the namespace retires the
// pools and removes the Neutron resources and the finalizer.
func TestNamespacePrePopulation(t *testing.T) {
	kc, rc, kubeconfig := testutil.KubeClient(t)
	testutil.RequireRoot(t)
	dyn := dynamic.NewForConfigOrDie(rc)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	testutil.ApplyCRD(ctx, t, dyn, "../../daemonset/crd-kuryrnetwork.yaml", kuryrnet.GVR)
	n := newNeutron(t)
	id := fmt.Sprintf("%05x", rand.Uint32()&0xfffff)
	cluster := "prepop-" + id

	// The subnet pool namespace subnets come from: a random /16 of 10.128.0.0/9, as the
	// controller's integration tests do.
	sp, err := n.client.CreateSubnetPool(ctx, "kuryr-prepop-"+id, n.fx.Project, []string{fmt.Sprintf("10.%d.0.0/16", 128+rand.IntN(127))}, 26)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.client.DeleteSubnetPool(context.Background(), sp.ID); err != nil {
			t.Errorf("cleanup: %v (a namespace network was left behind)", err)
		}
	})
	const batch = 6 // PopulateCount(6, min 0) = 3 ports per node
	wantPorts := kuryrnet.PopulateCount(batch, 0)
	common := fmt.Sprintf(`[kubernetes]
kubeconfig = %s
cluster_name = %s
pod_subnets_driver = namespace
enabled_handlers = vif,namespace,kuryrnetwork,kuryrnetwork_population
[namespace_subnet]
pod_subnet_pool = %s
pod_router = %s
`, kubeconfig, cluster, sp.ID, n.fx.PodRouter)

	startController(t, n, common, "kuryr-test-prepop="+id)
	type node struct {
		name, ip, trunk string
		a               *agentProc
	}
	var nodes []*node
	addNode := func(i int) *node {
		nd := &node{name: fmt.Sprintf("prepop-%s-%d", id, i)}
		nd.ip, nd.trunk = newTrunk(t, n, nd.name)
		if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nd.name},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nd.ip}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kc.CoreV1().Nodes().Delete(context.Background(), nd.name, metav1.DeleteOptions{}) })
		// A nested agent with no default pod subnet: every pool it has is a namespace's.
		nd.a = startAgentWith(t, n, nd.name, "ovs", common+fmt.Sprintf(`[kubernetes]
vif_pool_driver = nested
pod_vif_driver = nested-vlan
[pod_vif_nested]
worker_nodes_subnets = %s
[binding]
link_iface = lo
[vif_pool]
ports_pool_batch = %d
[neutron_defaults]
pod_subnet =
#empty-pool
`, n.fx.WorkerSubnet, batch), "--node-ip", nd.ip)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s agent log:\n%s", nd.name, nd.a.log())
			}
			cleanupNodePorts(t, n, nd.name, cluster)
		})
		nodes = append(nodes, nd)
		return nd
	}
	addNode(1)
	addNode(2)

	nsName := "prepop-" + id
	start := time.Now()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName,
		Labels: map[string]string{"kuryr-test-prepop": id}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	knc := kuryrnet.NewClient(dyn, "node-test")
	t.Cleanup(func() {
		// On failure the KuryrNetwork may outlive the controller: drop its finalizer so that
		// it does not stay behind in the shared API server.
		ctx := context.Background()
		_ = kc.CoreV1().Namespaces().Delete(ctx, nsName, metav1.DeleteOptions{})
		for range 300 {
			if _, err := knc.Get(ctx, nsName, nsName); apierrors.IsNotFound(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if k, err := knc.Get(ctx, nsName, nsName); err == nil {
			k.Finalizers = nil
			_, _ = knc.Update(ctx, k)
		}
		testutil.FinalizeNamespace(ctx, kc, nsName)
	})
	var kn *kuryrnet.KuryrNetwork
	eventually(t, time.Minute, "KuryrNetwork ready and populated", func() (bool, string) {
		kn, err = knc.Get(ctx, nsName, nsName)
		if err != nil {
			return false, err.Error()
		}
		return kn.Populate(), fmt.Sprintf("%+v", kn.Status)
	})
	if n.fx.PodRouter == "" {
		t.Log("the fixture has no pod router (fake Neutron): router interface not checked")
	}
	t.Logf("namespace network ready in %s: network %s subnet %s (%s)", time.Since(start).Round(time.Millisecond), kn.Status.NetID, kn.Status.SubnetID, kn.Status.SubnetCIDR)
	// The subnet is on the pod router (the real server's L3 plugin).
	routerPorts := func() []neutron.Port {
		ps, err := n.client.ListPorts(ctx, neutron.PortFilter{NetworkID: kn.Status.NetID, DeviceOwners: []string{"network:router_interface"}})
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	if rp := routerPorts(); n.fx.PodRouter != "" && (kn.Status.RouterID != n.fx.PodRouter || len(rp) != 1 || rp[0].DeviceID != n.fx.PodRouter) {
		t.Errorf("status.routerId %q, router interfaces on the namespace network %+v; want one of router %s", kn.Status.RouterID, rp, n.fx.PodRouter)
	}
	if subs, err := n.client.ListSubnets(ctx, neutron.SubnetFilter{NetworkID: kn.Status.NetID}); err != nil || len(subs) != 1 ||
		subs[0].ID != kn.Status.SubnetID || subs[0].SubnetPoolID != sp.ID {
		t.Fatalf("Neutron subnets of network %s: %+v, %v; want %s from pool %s", kn.Status.NetID, subs, err, kn.Status.SubnetID, sp.ID)
	}

	// Every node's pool for the namespace holds PopulateCount ports: in the agent, on its trunk,
	// on the namespace subnet, tagged for the node.
	checkPool := func(nd *node) {
		t.Helper()
		eventually(t, time.Minute, nd.name+"'s pool for "+nsName, func() (bool, string) {
			free, where := namespacePoolPorts(t, nd.a, nd.ip, kn)
			return free == wantPorts, where
		})
		ports, err := n.client.ListPorts(ctx, neutron.PortFilter{NetworkID: kn.Status.NetID, Tags: []string{neutron.NodeTag(nd.name)}})
		if err != nil {
			t.Fatal(err)
		}
		onTrunk := subportIDs(t, n, nd.trunk)
		if len(ports) != wantPorts {
			t.Errorf("%s: %d ports on the namespace network tagged for it, want %d", nd.name, len(ports), wantPorts)
		}
		for _, p := range ports {
			if !slices.Contains(onTrunk, p.ID) || len(p.FixedIPs) != 1 || p.FixedIPs[0].SubnetID != kn.Status.SubnetID {
				t.Errorf("%s: port %s (%+v) is not a subport of trunk %s (%v) on subnet %s", nd.name, p.ID, p.FixedIPs, nd.trunk, onTrunk, kn.Status.SubnetID)
			}
		}
	}
	for _, nd := range nodes {
		checkPool(nd)
	}
	t.Logf("pools of %d nodes populated with %d ports each %s after the namespace was created", len(nodes), wantPorts, time.Since(start).Round(time.Millisecond))

	// A restarted agent finds its ports in Neutron and does not populate twice.
	nodes[0].a.stop(syscall.SIGTERM)
	nodes[0].a.start()
	time.Sleep(2 * time.Second) // room for a wrong second populate to show
	checkPool(nodes[0])
	// A node that joins later gets its share.
	checkPool(addNode(3))

	// Deleting the namespace: pools retired, network, subnet and ports gone, finalizer removed.
	if err := kc.CoreV1().Namespaces().Delete(ctx, nsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "KuryrNetwork gone", func() (bool, string) {
		_, err := knc.Get(ctx, nsName, nsName)
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	eventually(t, time.Minute, "namespace network deleted in Neutron", func() (bool, string) {
		nets, err := n.client.ListNetworks(ctx, neutron.NetworkFilter{Name: nsName})
		ports, err2 := n.client.ListPorts(ctx, neutron.PortFilter{NetworkID: kn.Status.NetID})
		return err == nil && err2 == nil && len(nets) == 0 && len(ports) == 0, fmt.Sprintf("networks %d ports %d %v %v", len(nets), len(ports), err, err2)
	})
	for _, nd := range nodes {
		eventually(t, 30*time.Second, nd.name+" forgets the retired pool", func() (bool, string) {
			free, where := namespacePoolPorts(t, nd.a, nd.ip, kn)
			return free < 0, where
		})
		if log := nd.a.log(); !strings.Contains(log, "its pool is retired") {
			t.Errorf("%s: no retirement in the agent's log", nd.name)
		}
	}
}

// namespacePoolPorts returns how many ports the agent's pool for the namespace network holds
// (nested pools are keyed by the node's trunk IP)
// (-1 when it has no such pool) and what the agent listed.
func namespacePoolPorts(t *testing.T, a *agentProc, poolNode string, kn *kuryrnet.KuryrNetwork) (int, string) {
	t.Helper()
	var where []string
	for _, p := range a.pools(t) {
		where = append(where, fmt.Sprintf("%s/%s/%s=%d+%d", p.Node, p.Project, p.Network, p.Free, p.InFlight))
		if p.Node == poolNode && p.Project == kn.Spec.ProjectID && p.Network == kn.Status.NetID {
			return p.Free, strings.Join(where, " ")
		}
	}
	return -1, strings.Join(where, " ")
}

// startController runs kuryr-controller without leader election for the namespaces matching
// selector, with the common kuryr.conf lines, and waits until it is ready.
func startController(t *testing.T, n *neutronEnv, common, selector string) {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`%s
[neutron]
auth_type = none
endpoint_override = %s
project_id = %s
[neutron_defaults]
project = %s
pod_security_groups = %s
`, common, n.fx.Endpoint, n.fx.Project, n.fx.Project, strings.Join(n.fx.SecurityGroups, ","))
	path := filepath.Join(dir, "kuryr.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	health, metrics := freeAddress(t), freeAddress(t)
	cmd := exec.Command(filepath.Join(binDir, "kuryr-controller"), "--config-file", path, "--leader-elect=false",
		"--namespace-selector", selector, "--health-address", health, "--metrics-address", metrics, "-v", "2")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("kuryr-controller log:\n%s", b)
		}
	})
	eventually(t, time.Minute, "kuryr-controller ready", func() (bool, string) {
		resp, err := http.Get("http://" + health + "/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

// freeAddress returns a loopback address no one listens on now: tests of other packages run at
// the same time and listen on ports of their own.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
