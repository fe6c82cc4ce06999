package node

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
)

// curlManage runs one of seed 002's curl commands against the agent's management socket.
func curlManage(t *testing.T, sock, path, method, body string) string {
	t.Helper()
	out, err := exec.Command("curl", "-sS", "--fail-with-body", "--unix-socket", sock, "http://localhost"+path,
		"-H", "Content-Type: application/json", "-X", method, "-d", body).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s %s: %v\n%s", method, path, err, out)
	}
	return string(out)
}

func kuryrPools(t *testing.T, a *agentProc, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kuryr-pools"), append([]string{args[0], "--socket", a.manageSock}, args[1:]...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kuryr-pools %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// newTrunk makes a "VM" of the test's own on the worker subnet: a parent port and its trunk.
func newTrunk(t *testing.T, n *neutronEnv, name string) (ip, trunkID string) {
	t.Helper()
	ctx := context.Background()
	ports, err := n.client.CreatePorts(ctx, []neutron.PortSpec{{NetworkID: n.fx.WorkerNetwork, ProjectID: n.fx.Project, SubnetIDs: []string{n.fx.WorkerSubnet}, Name: name}})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := n.client.CreateTrunk(ctx, name, ports[0].ID, n.fx.Project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if cur, err := n.client.GetTrunk(ctx, tr.ID); err == nil && len(cur.SubPorts) > 0 {
			var ids []string
			for _, s := range cur.SubPorts {
				ids = append(ids, s.PortID)
			}
			_ = n.client.RemoveSubports(ctx, tr.ID, ids)
			n.client.DeletePorts(ctx, ids)
		}
		_ = n.client.DeleteTrunk(ctx, tr.ID)
		n.client.DeletePorts(ctx, []string{ports[0].ID})
	})
	return ports[0].FixedIPs[0].IPAddress, tr.ID
}

func subportIDs(t *testing.T, n *neutronEnv, trunkID string) []string {
	t.Helper()
	tr, err := n.client.GetTrunk(context.Background(), trunkID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	vlans := map[int]bool{}
	for _, s := range tr.SubPorts {
		ids = append(ids, s.PortID)
		if vlans[s.SegmentationID] {
			t.Errorf("VLAN %d used twice on trunk %s", s.SegmentationID, trunkID)
		}
		vlans[s.SegmentationID] = true
	}
	slices.Sort(ids)
	return ids
}

// TestSeedPoolManagementNested runs every command of seed 002 (curl and the kuryr-pools CLI, the
// successor of subports.py) against a nested agent on the real neutron-server, checking the trunk
// after each.
func TestSeedPoolManagementNested(t *testing.T) {
	n := newNeutron(t)
	ip, trunkID := newTrunk(t, n, fmt.Sprintf("manage-vm-%d", time.Now().UnixNano()%100000))
	a := startAgent(t, n, "node-manage", "ovs", fmt.Sprintf(`[kubernetes]
vif_pool_driver = nested
pod_vif_driver = nested-vlan
[pod_vif_nested]
worker_nodes_subnets = %s
[binding]
link_iface = lo
#empty-pool
`, n.fx.WorkerSubnet), ip)
	ctx := context.Background()
	sgs := strings.Join(n.fx.SecurityGroups, `", "`)

	got := curlManage(t, a.manageSock, "/populatePool", "POST", fmt.Sprintf(`{"trunks": ["%s"], "num_ports": 3}`, ip))
	if want := fmt.Sprintf("Ports pool at ['%s'] was populated with 3 ports.", ip); got != want {
		t.Errorf("populatePool: %q, want %q", got, want)
	}
	ids := subportIDs(t, n, trunkID)
	if len(ids) != 3 {
		t.Fatalf("trunk has %d subports after populating 3", len(ids))
	}
	for _, id := range ids {
		p, err := n.client.GetPort(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name != "available-port" || !p.HasTags(neutron.NodeTag("node-manage")) {
			t.Errorf("subport %s: name %q tags %v", id, p.Name, p.Tags)
		}
	}
	if out := kuryrPools(t, a, "create", "--trunks", ip, "-n", "2"); !strings.Contains(out, "was populated with 2 ports.") {
		t.Errorf("kuryr-pools create: %q", out)
	}
	ids = subportIDs(t, n, trunkID)
	if len(ids) != 5 {
		t.Fatalf("trunk has %d subports, want 5", len(ids))
	}
	list := curlManage(t, a.manageSock, "/listPools", "GET", `{}`)
	if want := fmt.Sprintf("Pools:\n[\"%s\", \"%s\", \"%s\"] has 5 ports\n", ip, n.fx.Project, n.fx.PodNetwork); list != want {
		t.Errorf("listPools: %q, want %q", list, want)
	}
	show := curlManage(t, a.manageSock, "/showPool", "GET", fmt.Sprintf(`{"pool_key": ["%s", "%s", ["%s"]]}`, ip, n.fx.Project, sgs))
	lines := strings.Split(strings.TrimSpace(show), "\n")
	shown := append([]string(nil), lines[1:]...)
	slices.Sort(shown)
	if !strings.HasSuffix(lines[0], "ports are:") || !slices.Equal(shown, ids) {
		t.Errorf("showPool: %q, want the trunk's subports %v", show, ids)
	}
	cliShow := kuryrPools(t, a, append([]string{"show", "--trunk", ip, "-p", n.fx.Project, "--sg"}, n.fx.SecurityGroups...)...)
	if cliShow != show {
		t.Errorf("kuryr-pools show = %q, curl showPool = %q", cliShow, show)
	}
	got = curlManage(t, a.manageSock, "/freePool", "POST", fmt.Sprintf(`{"trunks": ["%s"]}`, ip))
	if want := fmt.Sprintf("Ports pool belonging to ['%s'] was freed.", ip); got != want {
		t.Errorf("freePool: %q, want %q", got, want)
	}
	if left := subportIDs(t, n, trunkID); len(left) != 0 {
		t.Errorf("trunk still has subports %v after freePool", left)
	}
	for _, id := range ids {
		if _, err := n.client.GetPort(ctx, id); err == nil {
			t.Errorf("port %s still exists after freePool", id)
		}
	}
	if out := kuryrPools(t, a, "free"); out != "Ports pool belonging to all was freed.\n" {
		t.Errorf("kuryr-pools free: %q", out)
	}
}

// TestPodsUsePopulatedPorts: on bare metal, ports created by populatePool are the ones pods get.
func TestPodsUsePopulatedPorts(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-populated", "bridge", "#empty-pool\n")
	ctx := context.Background()
	kuryrPools(t, a, "create", "--trunks", "node-populated", "-n", "2")
	show := kuryrPools(t, a, "show", "--trunk", "node-populated", "-p", n.fx.Project, "--network", n.fx.PodNetwork)
	populated := strings.Split(strings.TrimSpace(show), "\n")[1:]
	if len(populated) != 2 {
		t.Fatalf("show after populate: %q", show)
	}
	for _, p := range newPods(t, 2, "populated") {
		if _, err := a.runner.Add(ctx, p); err != nil {
			t.Fatal(err)
		}
		id := portOf(t, n, p.Result.IPs[0].Address.IP.String()).ID
		if !slices.Contains(populated, id) {
			t.Errorf("pod %s got port %s, not one of the populated %v", p.Name, id, populated)
		}
		defer a.runner.Del(ctx, p) //nolint:errcheck // cleanup
	}
}
