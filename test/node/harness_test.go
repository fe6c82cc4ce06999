// Package node holds end-to-end tests of one node: the real kuryr-agent and kuryr-cni binaries,
// real network namespaces, and the real neutron-server of hack/neutron-up.sh (an in-process
// Neutron stand-in when it is not running and KURYR_REQUIRE_ALL is unset).
package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithBinaries(m, &binDir, "kuryr-agent", "kuryr-cni", "kuryr-pools", "kuryr-controller"))
}

// neutronEnv is the Neutron the agents of a test use.
type neutronEnv struct {
	fx     fakeneutron.Fixture
	client *neutron.Client
}

func newNeutron(t *testing.T) *neutronEnv {
	t.Helper()
	var fx fakeneutron.Fixture
	if path := os.Getenv("KURYR_TEST_NEUTRON"); path != "" {
		var err error
		if fx, err = fakeneutron.LoadFixture(path); err != nil {
			t.Fatal(err)
		}
	} else {
		testutil.Require(t, os.Getenv(testutil.RequireAllEnv) != "1", "KURYR_TEST_NEUTRON (the real neutron-server's fixture) is not set")
		srv := fakeneutron.New()
		if _, err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		var err error
		if fx, err = srv.Fixture("kuryr-node-test"); err != nil {
			t.Fatal(err)
		}
	}
	c, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: "none", EndpointOverride: fx.Endpoint, ProjectID: fx.Project}, "kuryr-node-test")
	if err != nil {
		t.Fatal(err)
	}
	return &neutronEnv{fx: fx, client: c}
}

// agentProc is a running kuryr-agent.
type agentProc struct {
	t          *testing.T
	dir        string
	conf       string
	node       string
	cmd        *exec.Cmd
	logf       *os.File
	health     string
	metrics    string
	cniSocket  string
	manageSock string
	runner     *cnirun.Runner
	flags      []string
	cluster    string // [kubernetes] cluster_name
}

var portBase = 31000

// startAgent writes a kuryr.conf for node (bare metal, veth binding mode) with extra lines
// appended, starts kuryr-agent and waits until it is ready.
func startAgent(t *testing.T, n *neutronEnv, node, vifType, extra string, nodeIP ...string) *agentProc {
	t.Helper()
	flags := []string{"--standalone"}
	if len(nodeIP) > 0 {
		flags = append(flags, "--node-ip", nodeIP[0])
	}
	return startAgentWith(t, n, node, vifType, extra, flags...)
}

// startAgentWith is startAgent with other kuryr-agent flags than --standalone.
func startAgentWith(t *testing.T, n *neutronEnv, node, vifType, extra string, flags ...string) *agentProc {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	portBase += 2
	a := &agentProc{t: t, dir: dir, flags: flags, node: node, health: freeAddress(t), metrics: freeAddress(t),
		cniSocket: filepath.Join(dir, "cni.sock"), manageSock: filepath.Join(dir, "manage.sock")}
	bridge := "kuryrt" + fmt.Sprint(portBase%10000)
	clusterID := portBase
	a.cluster = fmt.Sprintf("node-test-%d", clusterID)
	poolMin := 3
	if strings.Contains(extra, "#empty-pool") {
		poolMin = 0
	}
	conf := fmt.Sprintf(`[kubernetes]
vif_pool_driver = neutron
pod_vif_driver = neutron-vif
enable_manager = True
cluster_name = node-test-%d
[vif_pool]
ports_pool_min = %d
ports_pool_batch = 4
ports_pool_update_frequency = 1
[binding]
default_vif_type = %s
linux_bridge = %s
[pool_manager]
sock_file = %s
[cni_daemon]
socket_path = %s
checkpoint_path = %s
pool_wait_timeout = 20
metrics_address = %s
[cni_health_server]
health_address = %s
[neutron]
auth_type = none
endpoint_override = %s
project_id = %s
[neutron_defaults]
project = %s
pod_subnet = %s
pod_security_groups = %s
%s
`, clusterID, poolMin, vifType, bridge, a.manageSock, a.cniSocket, filepath.Join(dir, "checkpoint.json"), a.metrics, a.health,
		n.fx.Endpoint, n.fx.Project, n.fx.Project, n.fx.PodSubnet, strings.Join(n.fx.SecurityGroups, ","), extra)
	a.conf = filepath.Join(dir, "kuryr.conf")
	if err := os.WriteFile(a.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"kuryr","plugins":[{"type":"kuryr-cni","socketPath":%q,"timeoutSeconds":30,"logFile":%q}]}`,
		a.cniSocket, filepath.Join(dir, "kuryr-cni.log"))
	var err error
	if a.runner, err = cnirun.NewRunner([]byte(conflist), filepath.Join(dir, "cni-cache"), binDir); err != nil {
		t.Fatal(err)
	}
	// A run that was killed may have left ports of this node behind: start from none.
	cleanupNodePorts(t, n, node, "")
	a.start()
	t.Cleanup(func() {
		a.stop(syscall.SIGTERM)
		exec.Command("ip", "link", "del", bridge).Run() //nolint:errcheck // best effort
		// Leave nothing behind in a shared Neutron: delete every port tagged for this test's node
		// (subports are detached first by DeletePorts).
		cleanupNodePorts(t, n, node, fmt.Sprintf("node-test-%d", clusterID))
	})
	return a
}

func (a *agentProc) start() {
	a.t.Helper()
	var err error
	if a.logf, err = os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		a.t.Fatal(err)
	}
	tmpl := filepath.Join(a.dir, "conflist.template")
	_ = os.WriteFile(tmpl, []byte(`{"cniVersion":"1.1.0","name":"kuryr","plugins":[{"type":"kuryr-cni"}]}`), 0o600)
	for _, d := range []string{"host-bin", "host-net.d"} {
		_ = os.MkdirAll(filepath.Join(a.dir, d), 0o755)
	}
	args := append([]string{"--config-file", a.conf, "--node-name", a.node, "-v", "2",
		"--install-cni-bin-dir", filepath.Join(a.dir, "host-bin"), "--install-cni-conf-dir", filepath.Join(a.dir, "host-net.d"),
		"--cni-conf-template", tmpl}, a.flags...)
	a.cmd = exec.Command(filepath.Join(binDir, "kuryr-agent"), args...)
	a.cmd.Stdout, a.cmd.Stderr = a.logf, a.logf
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + a.health + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if a.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("kuryr-agent did not become ready; log:\n%s", a.log())
}

// stop sends sig (SIGKILL for a crash) and waits for the process.
func (a *agentProc) stop(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	_ = a.cmd.Wait()
	a.cmd = nil
	a.logf.Close()
}

// scrape returns the agent's Prometheus metrics.
func (a *agentProc) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

// pools returns the agent's pools as its management API reports them.
func (a *agentProc) pools(t *testing.T) []manage.Pool {
	t.Helper()
	resp, err := manage.NewClient(a.manageSock).Do(context.Background(), "GET", manage.PathList, struct{}{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var ans manage.Answer
	if err := jsonUnmarshal(resp.Body, &ans); err != nil {
		t.Fatalf("listPools: %v: %s", err, resp.Body)
	}
	return ans.Pools
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s (last: %s)", what, timeout, last)
}

// cleanupNodePorts deletes the ports an agent created for node in cluster.
func cleanupNodePorts(t *testing.T, n *neutronEnv, node, cluster string) {
	ctx := context.Background()
	tags := []string{neutron.NodeTag(node)}
	if cluster != "" {
		tags = append(tags, neutron.ClusterTag(cluster))
	}
	ports, err := n.client.ListPorts(ctx, neutron.PortFilter{Tags: tags})
	if err != nil {
		t.Errorf("cleanup: list the ports of node %s: %v", node, err)
		return
	}
	var ids []string
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	trunks, _ := n.client.ListTrunks(ctx, neutron.TrunkFilter{})
	for _, tr := range trunks {
		var mine []string
		for _, s := range tr.SubPorts {
			for _, id := range ids {
				if s.PortID == id {
					mine = append(mine, id)
				}
			}
		}
		if len(mine) > 0 {
			_ = n.client.RemoveSubports(ctx, tr.ID, mine)
		}
	}
	if failed := n.client.DeletePorts(ctx, ids); len(failed) > 0 {
		t.Errorf("cleanup: ports of node %s not deleted: %v", node, failed)
	}
}
