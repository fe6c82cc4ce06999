// Package fullnode runs kuryr on a whole Kubernetes node: the kubelet, containerd and
// kube-controller-manager of hack/node-up.sh against the apiserver of hack/kube-up.sh, the real
// neutron-server of hack/neutron-up.sh, and kuryr-agent as a host process configured as
// daemonset/ configures it (the ConfigMap's kuryr.conf, the conflist template, the CNI install
// step), in bare-metal mode. The node is one of the fixture's bare-metal hosts, whose emulated OVS
// agent makes Neutron bind its ports with binding:vif_type ovs, so the agent plugs the pods' veths
// into br-int of the userspace OVS (hack/ovs-up.sh), as on a bare-metal node with the OVS agent.
// Pods are created by a Deployment and run the local workload image; nothing is pulled from a
// registry.
package fullnode

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/test/invariant"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// NodeEnv names the env file hack/node-up.sh prints.
const NodeEnv = "KURYR_TEST_NODE"

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithBinaries(m, &binDir, "kuryr-agent", "kuryr-cni"))
}

// node is what hack/node-up.sh says about the node it runs.
type node struct {
	Name, Kubeconfig, CNIBinDir, CNIConfDir, WorkloadImage, KubeletLog string
	// L2Fixture is the Neutron of the real L2 agent that binds this node's ports on L2Bridge
	// (empty: node-up.sh ran without it).
	L2Fixture, L2Bridge, L2AgentLog string
	// ContainerdSocket is the node's containerd: the runtime's view of the live pods.
	ContainerdSocket string
}

func loadNode(t *testing.T) node {
	t.Helper()
	testutil.RequireRoot(t)
	path := os.Getenv(NodeEnv)
	if path == "" {
		testutil.Require(t, false, fmt.Sprintf("test needs a kubelet node: %s is not set (export %s=$(hack/node-up.sh | tail -n1))", NodeEnv, NodeEnv))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		testutil.Require(t, false, fmt.Sprintf("test needs a kubelet node: %v (rerun hack/node-up.sh)", err))
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			env[k] = v
		}
	}
	n := node{Name: env["KURYR_TEST_NODE_NAME"], Kubeconfig: env["KURYR_TEST_NODE_KUBECONFIG"], CNIBinDir: env["KURYR_TEST_NODE_CNI_BIN_DIR"],
		CNIConfDir: env["KURYR_TEST_NODE_CNI_CONF_DIR"], WorkloadImage: env["KURYR_TEST_NODE_WORKLOAD_IMAGE"], KubeletLog: env["KURYR_TEST_NODE_KUBELET_LOG"],
		L2Fixture: env["KURYR_TEST_NODE_L2_FIXTURE"], L2Bridge: env["KURYR_TEST_NODE_L2_BRIDGE"],
		L2AgentLog: env["KURYR_TEST_NODE_L2_AGENT_LOG"], ContainerdSocket: env["KURYR_TEST_NODE_CONTAINERD_SOCK"]}
	if n.Name == "" || n.Kubeconfig == "" || n.CNIBinDir == "" || n.CNIConfDir == "" || n.WorkloadImage == "" || n.ContainerdSocket == "" {
		t.Fatalf("%s (%s) is incomplete: %q; rerun hack/node-up.sh", path, NodeEnv, b)
	}
	return n
}

// env is one run of the suite: the node, its clients and the Neutron fixture.
type env struct {
	node   node
	kc     kubernetes.Interface
	nc     *neutron.Client
	fx     fakeneutron.Fixture
	ovsdb  string // the userspace OVS of hack/ovs-up.sh
	bridge string // the OVS bridge the node's ports are plugged into
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := loadNode(t)
	path := os.Getenv("KURYR_TEST_NEUTRON")
	testutil.Require(t, path != "", "KURYR_TEST_NEUTRON (the real neutron-server's fixture) is not set")
	fx, err := fakeneutron.LoadFixture(path)
	if err != nil {
		t.Fatal(err)
	}
	// Ports bound to a host without a (registered) L2 agent fail binding slowly; the fixture
	// registers an emulated one for each of its bare-metal hosts.
	testutil.Require(t, slices.Contains(fx.BareMetalHosts, n.Name), fmt.Sprintf("the Neutron fixture has no bare-metal host %s (rerun hack/neutron-up.sh)", n.Name))
	return connect(t, n, fx, "br-int")
}

// newL2Env is the node with hack/l2-agent-up.sh's neutron-server instead, where a real
// neutron-openvswitch-agent (started by hack/node-up.sh) binds the node's ports on bridge
// n.L2Bridge and reports them ACTIVE once plugged.
func newL2Env(t *testing.T) *env {
	t.Helper()
	n := loadNode(t)
	testutil.Require(t, n.L2Fixture != "", "hack/node-up.sh ran without the real L2 agent (KURYR_NODE_L2=0)")
	b, err := os.ReadFile(n.L2Fixture)
	if err != nil {
		testutil.Require(t, false, fmt.Sprintf("the L2 agent's Neutron fixture: %v (rerun hack/node-up.sh)", err))
	}
	// Its fixture has the fields of fakeneutron.Fixture that a bare-metal agent needs.
	var fx fakeneutron.Fixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("%s: %v", n.L2Fixture, err)
	}
	if fx.Endpoint == "" || fx.Project == "" || fx.PodSubnet == "" {
		t.Fatalf("%s is incomplete: %s", n.L2Fixture, b)
	}
	return connect(t, n, fx, n.L2Bridge)
}

// connect checks the OVS bridge the node's ports are plugged into, holds the node for the test and
// makes the Neutron and Kubernetes clients.
func connect(t *testing.T, n node, fx fakeneutron.Fixture, bridge string) *env {
	t.Helper()
	ovsdb := os.Getenv("KURYR_TEST_OVSDB")
	if ovsdb == "" {
		ovsdb = "unix:/var/tmp/kuryr-test/ovs/db.sock"
	}
	err := exec.Command("ovs-vsctl", "--db="+ovsdb, "--timeout=10", "br-exists", bridge).Run()
	testutil.Require(t, err == nil, fmt.Sprintf("userspace OVS with %s (hack/ovs-up.sh, hack/node-up.sh) is not running at %s", bridge, ovsdb))
	lockHost(t, n.Name)
	nc, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: "none", EndpointOverride: fx.Endpoint, ProjectID: fx.Project}, "kuryr-fullnode-test")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 50, 100
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{node: n, kc: kc, nc: nc, fx: fx, ovsdb: ovsdb, bridge: bridge}
}

// lockHost holds the node for the test: a second run on this machine waits for the first.
func lockHost(t *testing.T, host string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "kuryr-test-host-"+host+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// hostPorts lists every port bound to the node: the host is this suite's alone.
func (e *env) hostPorts(ctx context.Context) ([]neutron.Port, error) {
	return e.nc.ListPorts(ctx, neutron.PortFilter{HostID: e.node.Name})
}

func (e *env) deleteHostPorts(t *testing.T) {
	ctx := context.Background()
	ports, err := e.hostPorts(ctx)
	if err != nil {
		t.Errorf("cleanup: list the ports of host %s: %v", e.node.Name, err)
		return
	}
	ids := make([]string, 0, len(ports))
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	if failed := e.nc.DeletePorts(ctx, ids); len(failed) > 0 {
		t.Errorf("cleanup: ports of host %s not deleted: %v", e.node.Name, failed)
	}
}

// agentProc is kuryr-agent running as the DaemonSet runs it, as a host process.
type agentProc struct {
	t                     *testing.T
	dir, node             string
	confs                 []string
	cluster               string
	health, metrics       string
	cniSocket, manageSock string
	checkpoint            string
	template              string
	cniBin, cniConf       string
	cmd                   *exec.Cmd
	exited                chan struct{} // closed once cmd has exited and been reaped
	logf                  *os.File
	starts                int
}

// manifestKuryrConf is daemonset/configmap.yaml's kuryr.conf, verbatim.
func manifestKuryrConf(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../daemonset/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatalf("daemonset/configmap.yaml: %v", err)
	}
	conf := cm.Data["kuryr.conf"]
	if conf == "" {
		t.Fatal("daemonset/configmap.yaml has no kuryr.conf")
	}
	return conf
}

// newAgent writes the configuration: the manifests' kuryr.conf first, then a second
// --config-file (later files win) with what a bare-metal node of this test differs in: the pool
// and binding drivers, Neutron and the Kubernetes API of the test, and paths of its own so that
// nothing on the host (/run/kuryr, /etc/cni) is touched. The conflist is daemonset's template
// with the socket and log paths changed likewise.
func newAgent(t *testing.T, e *env) *agentProc {
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, dir: dir, node: e.node.Name, cluster: fmt.Sprintf("kuryr-test-fullnode-%05d", rand.IntN(100000)),
		health: freeAddr(t), metrics: freeAddr(t),
		cniSocket: filepath.Join(dir, "cni.sock"), manageSock: filepath.Join(dir, "manage.sock"),
		checkpoint: filepath.Join(dir, "state", "checkpoint.json"), template: filepath.Join(dir, "10-kuryr.conflist.template"),
		cniBin: e.node.CNIBinDir, cniConf: e.node.CNIConfDir}
	manifest := filepath.Join(dir, "kuryr.conf")
	if err := os.WriteFile(manifest, []byte(manifestKuryrConf(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf(`[kubernetes]
vif_pool_driver = neutron
pod_vif_driver = neutron-vif
cluster_name = %s
kubeconfig = %s
[vif_pool]
# 20 s in the manifest: released ports would wait that long to be recycled.
ports_pool_update_frequency = 1
[binding]
ovsdb_connection = %s
[pool_manager]
sock_file = %s
[cni_daemon]
socket_path = %s
checkpoint_path = %s
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
`, a.cluster, e.node.Kubeconfig, e.ovsdb, a.manageSock, a.cniSocket, a.checkpoint, a.metrics, a.health,
		e.fx.Endpoint, e.fx.Project, e.fx.Project, e.fx.PodSubnet, strings.Join(e.fx.SecurityGroups, ","))
	node := filepath.Join(dir, "node.conf")
	if err := os.WriteFile(node, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	a.confs = []string{manifest, node}

	raw, err := os.ReadFile("../../daemonset/10-kuryr.conflist.template")
	if err != nil {
		t.Fatal(err)
	}
	var conflist map[string]any
	if err := json.Unmarshal(raw, &conflist); err != nil {
		t.Fatalf("daemonset/10-kuryr.conflist.template: %v", err)
	}
	plugin := conflist["plugins"].([]any)[0].(map[string]any)
	plugin["socketPath"], plugin["logFile"] = a.cniSocket, filepath.Join(dir, "kuryr-cni.log")
	raw, _ = json.Marshal(conflist)
	if err := os.WriteFile(a.template, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// The node must not be offered the plugin of an earlier run: the conflist appears only once
	// this agent is ready.
	_ = os.Remove(filepath.Join(a.cniConf, "10-kuryr.conflist"))
	t.Cleanup(func() {
		a.stop(syscall.SIGTERM)
		_ = os.Remove(filepath.Join(a.cniConf, "10-kuryr.conflist"))
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "kuryr-fullnode-agent.log")
			_ = os.WriteFile(keep, []byte(a.log()), 0o600)
			t.Logf("agent log (last 40 lines; all of it in %s):\n%s", keep, tail(a.log(), 40))
		}
	})
	return a
}

// start runs kuryr-agent with the DaemonSet's arguments (paths of this test) and waits until it
// is ready.
func (a *agentProc) start() time.Duration {
	a.t.Helper()
	var err error
	if a.logf, err = os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		a.t.Fatal(err)
	}
	var args []string
	for _, c := range a.confs {
		args = append(args, "--config-file="+c)
	}
	args = append(args, "--install-cni-bin-dir="+a.cniBin, "--install-cni-conf-dir="+a.cniConf, "--cni-conf-template="+a.template, "-v=2")
	a.cmd = exec.Command(filepath.Join(binDir, "kuryr-agent"), args...)
	a.cmd.Env = append(os.Environ(), "NODE_NAME="+a.node)
	a.cmd.Stdout, a.cmd.Stderr = a.logf, a.logf
	t0 := time.Now()
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.starts++
	exited := make(chan struct{})
	a.exited = exited
	cmd := a.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
	for deadline := t0.Add(90 * time.Second); time.Now().Before(deadline); {
		if resp, err := http.Get("http://" + a.health + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(t0)
			}
		}
		select {
		case <-exited:
			a.t.Fatalf("kuryr-agent exited before it was ready; log:\n%s", tail(a.log(), 60))
		case <-time.After(50 * time.Millisecond):
		}
	}
	a.t.Fatalf("kuryr-agent did not become ready; log:\n%s", tail(a.log(), 60))
	return 0
}

// stop sends sig (SIGKILL for a crash) and waits for the process to end.
func (a *agentProc) stop(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	<-a.exited
	a.cmd = nil
	a.logf.Close()
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

// pools returns the agent's pools as its management API reports them.
func (a *agentProc) pools(ctx context.Context) ([]manage.Pool, error) {
	resp, err := manage.NewClient(a.manageSock).Do(ctx, "GET", manage.PathList, struct{}{}, true)
	if err != nil {
		return nil, err
	}
	var ans manage.Answer
	if err := json.Unmarshal(resp.Body, &ans); err != nil {
		return nil, fmt.Errorf("listPools: %w: %s", err, resp.Body)
	}
	return ans.Pools, nil
}

// metric sums the samples of the agent's metric name whose labels pass match (nil: all).
func (a *agentProc) metric(t *testing.T, name string, match func(labels string) bool) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || len(rest) == 0 || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := "", rest
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			labels, value = rest[1:end], rest[end+1:]
		}
		if match != nil && !match(labels) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		total += v
	}
	return total
}

// portCreates counts the agent's Neutron port create requests, single and bulk
// (kuryr_neutron_requests_total{operation=~"ports.(bulk_)?create"}).
func (a *agentProc) portCreates(t *testing.T) int {
	t.Helper()
	return int(a.metric(t, "kuryr_neutron_requests_total", func(l string) bool {
		return strings.Contains(l, `operation="ports.create`) || strings.Contains(l, `operation="ports.bulk_create`)
	}))
}

// addTime returns the number of successful CNI ADDs the agent answered and the time they took.
func (a *agentProc) addTime(t *testing.T) (int, time.Duration) {
	t.Helper()
	ok := func(l string) bool { return strings.Contains(l, `command="add"`) && strings.Contains(l, `result="ok"`) }
	n := a.metric(t, "kuryr_cni_request_duration_seconds_count", ok)
	sum := a.metric(t, "kuryr_cni_request_duration_seconds_sum", ok)
	return int(n), time.Duration(sum * float64(time.Second))
}

// attachment is the part of the agent's checkpoint the tests read: which pod holds which port,
// in which network namespace.
type attachment struct {
	ContainerID string `json:"containerId"`
	Netns       string `json:"netns"`
	Pod         struct {
		Namespace, Name, UID string
	} `json:"pod"`
	Port struct {
		ID string `json:"id"`
	} `json:"port"`
}

func (a *agentProc) attachments() ([]attachment, error) {
	b, err := os.ReadFile(a.checkpoint)
	if err != nil {
		return nil, err
	}
	var cp struct {
		Attachments []attachment `json:"attachments"`
	}
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", a.checkpoint, err)
	}
	return cp.Attachments, nil
}

// freeAddr returns a loopback address nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s (last: %s)", what, timeout, last)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return tail(string(b), n)
}

// liveSandboxes is what the runtime holds: containerd's pod sandboxes with a running task, each
// with its network namespace (eth0 is the interface the CNI plugin was asked for).
func (e *env) liveSandboxes(ctx context.Context) ([]invariant.Container, error) {
	ctr := func(args ...string) ([]byte, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", e.node.ContainerdSocket, "-n", "k8s.io"}, args...)...).Output()
		if err != nil {
			return nil, fmt.Errorf("ctr %s: %w", strings.Join(args, " "), err)
		}
		return out, nil
	}
	out, err := ctr("tasks", "ls")
	if err != nil {
		return nil, err
	}
	running := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "RUNNING" {
			running[f[0]] = true
		}
	}
	var live []invariant.Container
	for id := range running {
		out, err := ctr("containers", "info", id)
		if err != nil {
			continue // gone meanwhile
		}
		var info struct {
			Labels map[string]string `json:"Labels"`
			Spec   struct {
				Linux struct {
					Namespaces []struct{ Type, Path string } `json:"namespaces"`
				} `json:"linux"`
			} `json:"Spec"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			return nil, fmt.Errorf("ctr containers info %s: %w", id, err)
		}
		if info.Labels["io.cri-containerd.kind"] != "sandbox" {
			continue
		}
		for _, n := range info.Spec.Linux.Namespaces {
			if n.Type == "network" {
				live = append(live, invariant.Container{ContainerID: id, IfName: "eth0", Netns: n.Path})
			}
		}
	}
	return live, nil
}
