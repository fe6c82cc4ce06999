package node

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

// tcpListeners returns the TCP addresses pid listens on, from /proc/net/tcp{,6} and its sockets.
func tcpListeners(t *testing.T, pid int) []net.TCPAddr {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []net.TCPAddr
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, filepath.Base(table)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			hexIP, hexPort, _ := strings.Cut(fields[1], ":")
			raw, err := hex.DecodeString(hexIP)
			if err != nil {
				t.Fatalf("%s: %q: %v", table, fields[1], err)
			}
			// The kernel prints the address as 32-bit words in host (little-endian) order.
			for i := 0; i+4 <= len(raw); i += 4 {
				raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
			}
			port, _ := strconv.ParseUint(hexPort, 16, 16)
			out = append(out, net.TCPAddr{IP: net.IP(raw), Port: int(port)})
		}
		f.Close()
	}
	return out
}

// waitPortsFree waits until nothing listens on the loopback ports, which other suites' agents
// with a default configuration may hold for a while.
func waitPortsFree(t *testing.T, ports ...int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		busy := ""
		for _, p := range ports {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				busy = err.Error()
				break
			}
			l.Close()
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			testutil.Require(t, false, "default ports in use: "+busy)
		}
		time.Sleep(time.Second)
	}
}

// TestListenersOnLoopbackByDefault starts kuryr-agent with a kuryr.conf that says nothing of
// health_address or metrics_address: it serves health and metrics on their default ports, and every
// TCP socket it listens on is on loopback. kuryr-controller's flags default to loopback too.
func TestListenersOnLoopbackByDefault(t *testing.T) {
	testutil.RequireRoot(t)
	n := newNeutron(t)
	const healthPort, metricsPort = 8090, 9655
	waitPortsFree(t, healthPort, metricsPort)
	dir := t.TempDir()
	node := fmt.Sprintf("kuryr-test-listen-%d", time.Now().UnixNano()%1000000)
	conf := fmt.Sprintf(`[kubernetes]
vif_pool_driver = neutron
pod_vif_driver = neutron-vif
enable_manager = True
cluster_name = %s
[vif_pool]
ports_pool_min = 0
[binding]
default_vif_type = bridge
linux_bridge = kuryrlst%d
[pool_manager]
sock_file = %s
[cni_daemon]
socket_path = %s
checkpoint_path = %s
[neutron]
auth_type = none
endpoint_override = %s
project_id = %s
[neutron_defaults]
project = %s
pod_subnet = %s
pod_security_groups = %s
`, node, time.Now().UnixNano()%1000, filepath.Join(dir, "manage.sock"), filepath.Join(dir, "cni.sock"), filepath.Join(dir, "checkpoint.json"),
		n.fx.Endpoint, n.fx.Project, n.fx.Project, n.fx.PodSubnet, strings.Join(n.fx.SecurityGroups, ","))
	path := filepath.Join(dir, "kuryr.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "kuryr-agent"), "--config-file", path, "--node-name", node, "--standalone", "-v", "2")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		cleanupNodePorts(t, n, node, node)
	})
	log := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	eventually(t, time.Minute, "kuryr-agent ready on the default health address", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", healthPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatalf("metrics on the default address: %v\n%s", err, log())
	}
	resp.Body.Close()

	listeners := tcpListeners(t, cmd.Process.Pid)
	ports := map[int]bool{}
	for _, l := range listeners {
		ports[l.Port] = true
		if !l.IP.IsLoopback() {
			t.Errorf("kuryr-agent listens on %s, not loopback", l.String())
		}
	}
	if !ports[healthPort] || !ports[metricsPort] {
		t.Errorf("kuryr-agent listens on %v; want the health (%d) and metrics (%d) ports among them", listeners, healthPort, metricsPort)
	}
	t.Logf("kuryr-agent TCP listeners with the default configuration: %v", listeners)

	usage, _ := exec.Command(filepath.Join(binDir, "kuryr-controller"), "-h").CombinedOutput()
	for _, flag := range []string{"health-address", "metrics-address"} {
		i := strings.Index(string(usage), "-"+flag)
		if i < 0 {
			t.Fatalf("kuryr-controller -h does not list -%s:\n%s", flag, usage)
		}
		line := string(usage[i:])
		line, _, _ = strings.Cut(line[strings.Index(line, "\n")+1:], "\n")
		if !strings.Contains(line, `(default "127.0.0.1:`) {
			t.Errorf("kuryr-controller -%s: %q, want a loopback default", flag, line)
		}
	}
}
