// Package crash proves crash consistency and Kubernetes API outages end to end: the real
// kuryr-agent and kuryr-cni binaries, the real neutron-server of hack/neutron-up.sh, real network
// namespaces with veths on a Linux bridge. The agent is killed with SIGKILL at random moments and at
// the named points of internal/crashpoint, restarted each time, and test/invariant checks that no
// port leaked and none was given twice.
package crash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/internal/crashpoint"
	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/invariant"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithBinaries(m, &binDir, "kuryr-agent", "kuryr-cni"))
}

// env is the real neutron-server the agents of a test use.
type env struct {
	fx     fakeneutron.Fixture
	client *neutron.Client
	ovsdb  string // the userspace OVS of hack/ovs-up.sh, with br-int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	path := os.Getenv("KURYR_TEST_NEUTRON")
	testutil.Require(t, path != "", "KURYR_TEST_NEUTRON (the real neutron-server's fixture, hack/neutron-up.sh) is not set")
	ovsdb := os.Getenv("KURYR_TEST_OVSDB")
	if ovsdb == "" {
		ovsdb = "unix:/var/tmp/kuryr-test/ovs/db.sock"
	}
	err := exec.Command("ovs-vsctl", "--db="+ovsdb, "--timeout=10", "br-exists", "br-int").Run()
	testutil.Require(t, err == nil, "userspace OVS with br-int (hack/ovs-up.sh) is not running at "+ovsdb)
	fx, err := fakeneutron.LoadFixture(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: "none", EndpointOverride: fx.Endpoint, ProjectID: fx.Project}, "kuryr-crash-test")
	if err != nil {
		t.Fatal(err)
	}
	return &env{fx: fx, client: c, ovsdb: ovsdb}
}

// agentProc is one node's kuryr-agent, started and killed many times over the same state.
type agentProc struct {
	t          *testing.T
	e          *env
	dir        string
	conf       string
	node       string
	cluster    string
	ovsdb      string
	health     string
	cniSocket  string
	manageSock string
	checkpoint string
	flags      []string
	runner     *cnirun.Runner

	mu      sync.Mutex
	started time.Time
	toReady []time.Duration // per start that became ready: how long it took
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	state   *os.ProcessState
	starts  int
}

// healthClient probes readiness; an agent being killed must not hang the probe.
var healthClient = &http.Client{Timeout: 2 * time.Second}

// freeAddr returns a loopback address nobody listens on now, below the ephemeral range, so that no
// outgoing connection takes it before the agent listens there.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(10000)))
		if err == nil {
			defer l.Close()
			return l.Addr().String()
		}
	}
	t.Fatal("no free port in 20000-29999")
	return ""
}

// newAgent writes the configuration of bare-metal node host (one of the fixture's hosts with an
// emulated OVS agent, kept for this suite: its ports bind, so their veths go to OVS br-int) with a
// unique cluster name, plus extra, and registers the cleanup of everything it may create. It holds
// the host for the test, so that two runs of the suite never share one, and starts from a host
// without ports. It does not start the agent.
func newAgent(t *testing.T, e *env, host, extra string, flags ...string) *agentProc {
	t.Helper()
	if !slices.Contains(e.fx.BareMetalHosts, host) {
		testutil.Require(t, false, fmt.Sprintf("the Neutron fixture has no bare-metal host %s (rerun hack/neutron-up.sh)", host))
	}
	lockHost(t, host)
	dir := t.TempDir()
	a := &agentProc{t: t, e: e, dir: dir, flags: flags,
		node: host, cluster: fmt.Sprintf("kuryr-test-%s-%05d", strings.TrimPrefix(host, "kuryr-test-"), rand.IntN(100000)),
		health: freeAddr(t), cniSocket: filepath.Join(dir, "cni.sock"), manageSock: filepath.Join(dir, "manage.sock"),
		checkpoint: filepath.Join(dir, "state", "checkpoint.json"), ovsdb: e.ovsdb}
	a.deletePorts() // a run that was killed may have left ports on the host
	conf := fmt.Sprintf(`[kubernetes]
vif_pool_driver = neutron
pod_vif_driver = neutron-vif
enable_manager = True
cluster_name = %s
[vif_pool]
ports_pool_min = 3
ports_pool_batch = 3
ports_pool_max = 5
ports_pool_cooldown = 0
ports_pool_update_frequency = 1
[binding]
default_vif_type = ovs
ovsdb_connection = %s
[pool_manager]
sock_file = %s
[cni_daemon]
socket_path = %s
checkpoint_path = %s
pool_wait_timeout = 15
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
`, a.cluster, a.ovsdb, a.manageSock, a.cniSocket, a.checkpoint, freeAddr(t), a.health,
		e.fx.Endpoint, e.fx.Project, e.fx.Project, e.fx.PodSubnet, strings.Join(e.fx.SecurityGroups, ","), extra)
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
	t.Cleanup(func() {
		a.stop(syscall.SIGTERM)
		a.deletePorts()
		if t.Failed() || os.Getenv("KURYR_CRASH_KEEP_LOGS") != "" {
			// The temp dir goes away with the test: keep the whole log for the post-mortem.
			keep := filepath.Join(os.TempDir(), a.node+".log")
			_ = os.WriteFile(keep, []byte(a.log()), 0o600)
			t.Logf("agent log (last 40 lines; all of it in %s):\n%s", keep, tail(a.log(), 40))
		}
	})
	return a
}

// deletePorts deletes every port bound to the node's host: the host is this suite's alone.
func (a *agentProc) deletePorts() {
	ctx := context.Background()
	ports, err := a.e.client.ListPorts(ctx, neutron.PortFilter{HostID: a.node})
	if err != nil {
		a.t.Errorf("cleanup: list the ports of host %s: %v", a.node, err)
		return
	}
	ids := make([]string, 0, len(ports))
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	if failed := a.e.client.DeletePorts(ctx, ids); len(failed) > 0 {
		a.t.Errorf("cleanup: ports of host %s not deleted: %v", a.node, failed)
	}
}

// lockHost holds host for the test: another run of the suite on this machine waits.
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

// start runs kuryr-agent with extraEnv (KURYR_CRASH_POINT=...). It does not wait for readiness.
func (a *agentProc) start(extraEnv ...string) {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		a.t.Fatal("start: the agent is running")
	}
	logf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	a.starts++
	fmt.Fprintf(logf, "===== start %d at %s %v\n", a.starts, time.Now().Format("15:04:05.000000"), extraEnv)
	// No --install-cni-*: copying and fsyncing kuryr-cni at every one of many starts would only
	// slow the restarts down (test/node covers the install).
	args := append([]string{"--config-file", a.conf, "--node-name", a.node, "-v", "2"}, a.flags...)
	cmd := exec.Command(filepath.Join(binDir, "kuryr-agent"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), extraEnv...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatal(err)
	}
	done := make(chan struct{})
	a.cmd, a.done, a.state, a.started = cmd, done, nil, time.Now()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		a.mu.Lock()
		a.state = cmd.ProcessState
		a.mu.Unlock()
		close(done)
	}()
}

// waitReady waits until the agent answers /ready, or returns an error when it exits first.
func (a *agentProc) waitReady(timeout time.Duration) error {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("kuryr-agent exited before it was ready: %v", a.exitState())
		default:
		}
		resp, err := healthClient.Get("http://" + a.health + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				a.mu.Lock()
				a.toReady = append(a.toReady, time.Since(a.started))
				a.mu.Unlock()
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("kuryr-agent not ready after %s", timeout)
}

// startReady starts the agent and fails the test unless it becomes ready.
func (a *agentProc) startReady() {
	a.t.Helper()
	a.start()
	if err := a.waitReady(60 * time.Second); err != nil {
		a.t.Fatalf("%v; log:\n%s", err, tail(a.log(), 80))
	}
}

// readyTimes summarizes how long the starts took to become ready.
func (a *agentProc) readyTimes() cnirun.Summary {
	a.mu.Lock()
	defer a.mu.Unlock()
	return cnirun.Summarize(a.toReady)
}

// pools returns the agent's pools from its management API.
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

// waitFree waits until the agent's pools hold at least n free ports.
func (a *agentProc) waitFree(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ps, err := a.pools(ctx)
		free := 0
		for _, p := range ps {
			free += p.Free
		}
		if err == nil && free >= n {
			return
		}
		last = fmt.Sprint(ps, err)
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the pools never held %d free ports (last: %s)", n, last)
}

// exited tells whether the current process has exited.
func (a *agentProc) exited() bool {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// waitAlive reports whether the agent is still running after d.
func (a *agentProc) waitAlive(d time.Duration) bool {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	case <-time.After(d):
		return true
	}
}

// waitExit waits for the current process to exit and returns how it ended.
func (a *agentProc) waitExit(timeout time.Duration) (*os.ProcessState, error) {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		return nil, errors.New("kuryr-agent still running")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.state
	a.cmd, a.done = nil, nil
	return st, nil
}

func (a *agentProc) exitState() *os.ProcessState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// stop sends sig (SIGKILL: a crash) and waits for the process.
func (a *agentProc) stop(sig syscall.Signal) {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if _, err := a.waitExit(30 * time.Second); err != nil {
		_ = cmd.Process.Kill()
		_, _ = a.waitExit(30 * time.Second)
	}
}

// killedBySIGKILL tells whether st is the end of a process killed by SIGKILL.
func killedBySIGKILL(st *os.ProcessState) bool {
	if st == nil {
		return false
	}
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crashEnv is the environment that makes the agent kill itself at point's nth call.
func crashEnv(point string, nth int) string {
	return fmt.Sprintf("%s=%s:%d", crashpoint.Env, point, nth)
}

// invariantOptions are the checker's view of this node with the runtime's live containers.
func (a *agentProc) invariantOptions(live []invariant.Container) invariant.Options {
	return invariant.Options{Neutron: a.e.client, Node: a.node, Cluster: a.cluster,
		Checkpoint: a.checkpoint, ManageSocket: a.manageSock, Live: live, OVSDB: a.ovsdb, OVSBridge: "br-int"}
}

// settle polls the invariant checker until it reports no problem; it fails the test with the last
// report when that does not happen within timeout (states in motion settle in a few ticks).
func (a *agentProc) settle(t *testing.T, ctx context.Context, what string, timeout time.Duration, live func() []invariant.Container) *invariant.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *invariant.Report
	var lastErr error
	for {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		r, err := invariant.Check(cctx, a.invariantOptions(live()))
		cancel()
		if err == nil && r.OK() {
			return r
		}
		last, lastErr = r, err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("%s: invariant check: %v", what, lastErr)
	}
	t.Errorf("%s: invariants broken after %s: %s", what, timeout, last)
	return last
}

// untaggedOnNetwork counts the ports of the pod network that carry no kuryr node tag: the shared
// network has other users, so the figure is reported, not asserted (invariant.Check asserts ours).
func (e *env) untaggedOnNetwork(ctx context.Context) (int, error) {
	ports, err := e.client.ListPorts(ctx, neutron.PortFilter{NetworkID: e.fx.PodNetwork})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range ports {
		tagged := false
		for _, tag := range p.Tags {
			if strings.HasPrefix(tag, neutron.NodeTagPrefix) {
				tagged = true
			}
		}
		if !tagged {
			n++
		}
	}
	return n, nil
}
