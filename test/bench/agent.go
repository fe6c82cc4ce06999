package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

// benchEnv is what the agent modes share.
type benchEnv struct {
	fixture, binDir, dir, ovsdb, host, out string
	portCounts                             string
	startups, pods, refillPool, batch      int
	batches                                int
	activeFixture                          string
	activePods                             int
	heapProfile                            string
	keepPorts                              bool
}

func (e *benchEnv) neutron(ctx context.Context, fixture string) (fakeneutron.Fixture, *neutron.Client, error) {
	var fx fakeneutron.Fixture
	var err error
	if fixture == e.activeFixture {
		// hack/l2-agent-up.sh's: a pod network and a host, no trunks.
		var data []byte
		if data, err = os.ReadFile(fixture); err == nil {
			err = json.Unmarshal(data, &fx)
		}
	} else {
		fx, err = fakeneutron.LoadFixture(fixture)
	}
	if err != nil {
		return fx, nil, err
	}
	c, err := neutron.NewClient(ctx, neutron.ClientOptions{AuthType: "none", EndpointOverride: fx.Endpoint, ProjectID: fx.Project, QPS: 100, Burst: 200, Timeout: 5 * time.Minute}, "kuryr-bench")
	return fx, c, err
}

// agentConf is one kuryr-agent's kuryr.conf.
type agentConf struct {
	name     string // work subdirectory and log name
	node     string
	nodeIP   string // nested: --node-ip
	driver   string // vif_pool_driver: neutron | noop | nested
	podVIF   string // pod_vif_driver: neutron-vif | nested-vlan
	min, max int
	batch    int
	endpoint string // Neutron as the agent sees it (maybe a proxy)
	fx       fakeneutron.Fixture
	ovsdb    string
	cluster  string
	extra    string
	pprof    bool // [cni_daemon] pprof: profiles on the metrics address
}

// agentProc is a running kuryr-agent.
type agentProc struct {
	cmd              *exec.Cmd
	dir              string
	health, metrics  string
	cniSocket        string
	started          time.Time
	exited           chan struct{}
	logPath, conflst string
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startAgent(e *benchEnv, c agentConf) (*agentProc, error) {
	dir := filepath.Join(e.dir, c.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	a := &agentProc{dir: dir, health: freeAddr(), metrics: freeAddr(), cniSocket: filepath.Join(dir, "cni.sock"), exited: make(chan struct{})}
	if c.driver == "" {
		c.driver = "neutron"
	}
	if c.podVIF == "" {
		c.podVIF = "neutron-vif"
	}
	if c.batch == 0 {
		c.batch = 10
	}
	endpoint := c.endpoint
	if endpoint == "" {
		endpoint = c.fx.Endpoint
	}
	conf := fmt.Sprintf(`[kubernetes]
vif_pool_driver = %s
pod_vif_driver = %s
enable_manager = True
cluster_name = %s
[vif_pool]
ports_pool_min = %d
ports_pool_max = %d
ports_pool_batch = %d
ports_pool_update_frequency = 1
[binding]
default_vif_type = ovs
ovsdb_connection = %s
[pool_manager]
sock_file = %s
[cni_daemon]
socket_path = %s
checkpoint_path = %s
metrics_address = %s
pool_wait_timeout = 60
pprof = %t
[cni_health_server]
health_address = %s
[neutron]
auth_type = none
endpoint_override = %s
project_id = %s
qps = 200
burst = 400
timeout = 300
[neutron_defaults]
project = %s
pod_subnet = %s
pod_security_groups = %s
%s
`, c.driver, c.podVIF, c.cluster, c.min, c.max, c.batch, c.ovsdb, filepath.Join(dir, "manage.sock"), a.cniSocket,
		filepath.Join(dir, "checkpoint.json"), a.metrics, c.pprof, a.health, endpoint, c.fx.Project, c.fx.Project, c.fx.PodSubnet,
		strings.Join(c.fx.SecurityGroups, ","), c.extra)
	confPath := filepath.Join(dir, "kuryr.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	a.conflst = filepath.Join(dir, "kuryr.conflist")
	if err := os.WriteFile(a.conflst, []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"kuryr","plugins":[{"type":"kuryr-cni","socketPath":%q,"timeoutSeconds":120,"logFile":%q}]}`,
		a.cniSocket, filepath.Join(dir, "kuryr-cni.log"))), 0o644); err != nil {
		return nil, err
	}
	a.logPath = filepath.Join(dir, "agent.log")
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	args := []string{"--standalone", "--config-file", confPath, "--node-name", c.node}
	if c.nodeIP != "" {
		args = append(args, "--node-ip", c.nodeIP)
	}
	a.cmd = exec.Command(filepath.Join(e.binDir, "kuryr-agent"), args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.started = time.Now()
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		_ = a.cmd.Wait()
		logf.Close()
		close(a.exited)
	}()
	return a, nil
}

// waitReady polls /ready every 5 ms and returns the time since the process started.
func (a *agentProc) waitReady(timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			return 0, fmt.Errorf("kuryr-agent exited before it was ready: %s", tail(a.logPath))
		default:
		}
		if resp, err := client.Get("http://" + a.health + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(a.started), nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("kuryr-agent not ready after %s: %s", timeout, tail(a.logPath))
}

func (a *agentProc) stop() {
	if a == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
}

// memory returns VmRSS and VmHWM (peak) of the agent in KiB.
// memUsage is the agent's resident memory from /proc/PID/status, in KiB.
type memUsage struct {
	rss, hwm   int64 // VmRSS, VmHWM
	anon, file int64 // RssAnon (heap, stacks), RssFile (the binary's pages in use)
}

func (m memUsage) String() string {
	return fmt.Sprintf("anonymous %.1f MiB, file-backed %.1f MiB", float64(m.anon)/1024, float64(m.file)/1024)
}

func (a *agentProc) memory() (m memUsage, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.rss = v
		case "VmHWM:":
			m.hwm = v
		case "RssAnon:":
			m.anon = v
		case "RssFile:":
			m.file = v
		}
	}
	return m, sc.Err()
}

// scrape is one read of the agent's metrics.
type scrape struct {
	requests map[string]float64 // kuryr_neutron_requests_total by operation
	latency  map[string]float64 // kuryr_neutron_request_duration_seconds_sum by operation
	free     float64            // kuryr_pool_ports{state="free"}, all pools
	inFlight float64
	created  float64 // kuryr_pool_operations_total{operation="ports_created"}
}

var metricLine = regexp.MustCompile(`^([a-z_]+)\{([^}]*)\} (\S+)$`)

func (a *agentProc) scrape() (scrape, error) {
	s := scrape{requests: map[string]float64{}, latency: map[string]float64{}}
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(m[2], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		switch m[1] {
		case "kuryr_neutron_requests_total":
			s.requests[labels["operation"]] += v
		case "kuryr_neutron_request_duration_seconds_sum":
			s.latency[labels["operation"]] += v
		case "kuryr_pool_ports":
			switch labels["state"] {
			case "free":
				s.free += v
			case "in_flight":
				s.inFlight += v
			}
		case "kuryr_pool_operations_total":
			if labels["operation"] == "ports_created" {
				s.created += v
			}
		}
	}
	return s, sc.Err()
}

func total(m map[string]float64) float64 {
	n := 0.0
	for _, v := range m {
		n += v
	}
	return n
}

// sub is m minus earlier, by key, without the zeros.
func sub(m, earlier map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range m {
		if x := v - earlier[k]; x != 0 {
			d[k] = x
		}
	}
	return d
}

func opsString(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%g", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// waitFor polls cond every 50 ms until it holds.
func waitFor(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// holdProxy forwards to Neutron and can hold every request until released: ADDs answered while
// Neutron is held made no Neutron request on their way.
type holdProxy struct {
	srv      *http.Server
	url      string
	mu       sync.Mutex
	held     chan struct{} // closed when released; nil when not holding
	seen     atomic.Int64
	heldReqs atomic.Int64
}

func newHoldProxy(target string) (*holdProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &holdProxy{url: "http://" + l.Addr().String() + "/"}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.seen.Add(1)
		p.mu.Lock()
		held := p.held
		p.mu.Unlock()
		if held != nil {
			p.heldReqs.Add(1)
			<-held
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *holdProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
		p.heldReqs.Store(0)
	}
}

func (p *holdProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

func (p *holdProxy) close() {
	p.release()
	_ = p.srv.Close()
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// saveProfile writes the agent's pprof profile name (its config has pprof) to path.
func (a *agentProc) saveProfile(name, path string) error {
	resp, err := http.Get("http://" + a.metrics + "/debug/pprof/" + name)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s profile: %s", name, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
