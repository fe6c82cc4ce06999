package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func newPods(t *testing.T, n int, prefix string) []*cnirun.Pod {
	t.Helper()
	var pods []*cnirun.Pod
	for i := 0; i < n; i++ {
		p, err := cnirun.NewPod("node-test", fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		pods = append(pods, p)
	}
	return pods
}

// portOf finds the Neutron port holding ip.
func portOf(t *testing.T, n *neutronEnv, ip string) neutron.Port {
	t.Helper()
	ports, err := n.client.ListPorts(context.Background(), neutron.PortFilter{FixedIP: ip, NetworkID: ""})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		for _, f := range p.FixedIPs {
			if f.IPAddress == ip && f.SubnetID == n.fx.PodSubnet {
				return p
			}
		}
	}
	t.Fatalf("no Neutron port holds %s", ip)
	return neutron.Port{}
}

func tcpEcho(t *testing.T, server, client *cnirun.Pod) {
	t.Helper()
	var l net.Listener
	if err := server.NS.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(server.Result.IPs[0].Address.IP.String(), "7777"))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", server.Name, err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = io.Copy(c, io.LimitReader(c, 4))
			c.Close()
		}
	}()
	var c net.Conn
	if err := client.NS.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect from %s to %s: %v", client.Name, l.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

func linkExists(t *testing.T, p *cnirun.Pod, name string) bool {
	t.Helper()
	found := false
	_ = p.NS.Do(func(ns.NetNS) error {
		_, err := net.InterfaceByName(name)
		found = err == nil
		return nil
	})
	return found
}

// TestBridgePodsEndToEnd: two pods get pooled ports through the real kuryr-cni, CHECK passes, they
// talk over TCP through the Linux bridge, Neutron learns their names, DEL twice is fine, and the
// ports go back to the pool.
func TestBridgePodsEndToEnd(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-bridge", "bridge", "")
	ctx := context.Background()
	eventually(t, 30*time.Second, "pool filled to ports_pool_min", func() (bool, string) {
		p := a.pools(t)
		return len(p) == 1 && p[0].Free >= 3, fmt.Sprint(p)
	})
	// The agent installed kuryr-cni at start and the conflist once ready.
	eventually(t, 5*time.Second, "kuryr-cni and the conflist installed", func() (bool, string) {
		bin, berr := os.Stat(filepath.Join(a.dir, "host-bin", "kuryr-cni"))
		_, cerr := os.Stat(filepath.Join(a.dir, "host-net.d", "10-kuryr.conflist"))
		return berr == nil && bin.Mode().Perm() == 0o755 && bin.Size() > 1<<20 && cerr == nil, fmt.Sprint(berr, cerr)
	})
	pods := newPods(t, 2, "bridge")
	for _, p := range pods {
		if _, err := a.runner.Add(ctx, p); err != nil {
			t.Fatalf("%v\nagent log:\n%s", err, a.log())
		}
		if err := a.runner.Check(ctx, p); err != nil {
			t.Errorf("CHECK %s: %v", p.Name, err)
		}
	}
	tcpEcho(t, pods[0], pods[1])
	for _, p := range pods {
		ip := p.Result.IPs[0].Address.IP.String()
		eventually(t, 15*time.Second, "Neutron port named after the pod", func() (bool, string) {
			port := portOf(t, n, ip)
			return port.Name == "node-test/"+p.Name && port.DeviceID == p.UID && port.MACAddress == p.Result.Interfaces[0].Mac,
				fmt.Sprintf("name=%q device_id=%q mac=%s", port.Name, port.DeviceID, port.MACAddress)
		})
	}
	if st := a.pools(t)[0]; st.InUse != 2 {
		t.Errorf("pool in use = %d, want 2", st.InUse)
	}
	metrics := a.scrape(t)
	for _, want := range []string{
		`kuryr_cni_request_duration_seconds_count{command="add",result="ok"} 2`,
		`kuryr_cni_request_duration_seconds_bucket{command="add",result="ok",le="0.0005"}`, // sub-millisecond buckets
		fmt.Sprintf(`kuryr_pool_ports{network=%q,node="node-bridge",project=%q,state="in_use"} 2`, n.fx.PodNetwork, n.fx.Project),
		`kuryr_neutron_requests_total{code="200",operation="ports.list"} 1`, // loading the pools at start
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s in:\n%s", want, grepLines(metrics, "kuryr_neutron_requests_total"))
		}
	}
	for _, p := range pods {
		for i := 0; i < 2; i++ { // DEL is idempotent
			if _, err := a.runner.Del(ctx, p); err != nil {
				t.Fatalf("DEL %d of %s: %v", i+1, p.Name, err)
			}
		}
		if linkExists(t, p, "eth0") {
			t.Errorf("%s still has eth0 after DEL", p.Name)
		}
	}
	ip0 := pods[0].Result.IPs[0].Address.IP.String()
	eventually(t, 15*time.Second, "released ports recycled to available-port", func() (bool, string) {
		port := portOf(t, n, ip0)
		st := a.pools(t)[0]
		return st.InUse == 0 && st.Cooling == 0 && port.Name == "available-port" && port.DeviceID == "",
			fmt.Sprintf("pool %+v, port name %q", st, port.Name)
	})
}

// TestAgentKilledBetweenAddAndDel: kill -9 of the agent after ADD, restart: DEL still releases the
// port, and the port is never in two places.
func TestAgentKilledBetweenAddAndDel(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-kill", "bridge", "")
	ctx := context.Background()
	pods := newPods(t, 2, "kill")
	if _, err := a.runner.Add(ctx, pods[0]); err != nil {
		t.Fatalf("%v\n%s", err, a.log())
	}
	held := portOf(t, n, pods[0].Result.IPs[0].Address.IP.String()).ID
	a.stop(syscall.SIGKILL)
	a.start()
	if st := a.pools(t)[0]; st.InUse != 1 {
		t.Fatalf("after restart the pool has %d ports in use, want 1 (the checkpointed pod)", st.InUse)
	}
	// A new pod never gets the port the first one holds.
	if _, err := a.runner.Add(ctx, pods[1]); err != nil {
		t.Fatal(err)
	}
	if got := portOf(t, n, pods[1].Result.IPs[0].Address.IP.String()).ID; got == held {
		t.Fatalf("port %s given to two pods", held)
	}
	if !linkExists(t, pods[0], "eth0") {
		t.Error("the first pod lost its interface across the agent restart")
	}
	for _, p := range pods {
		if _, err := a.runner.Del(ctx, p); err != nil {
			t.Fatalf("DEL %s after restart: %v", p.Name, err)
		}
	}
	eventually(t, 15*time.Second, "both ports back in the pool", func() (bool, string) {
		st := a.pools(t)[0]
		return st.InUse == 0, fmt.Sprintf("%+v", st)
	})
}

// TestDelWithAgentDown: DEL succeeds and removes the interface while the agent is down.
func TestDelWithAgentDown(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-down", "bridge", "")
	ctx := context.Background()
	p := newPods(t, 1, "down")[0]
	if _, err := a.runner.Add(ctx, p); err != nil {
		t.Fatal(err)
	}
	a.stop(syscall.SIGTERM)
	if _, err := a.runner.Del(ctx, p); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	if linkExists(t, p, "eth0") {
		t.Error("eth0 still in the pod after DEL with the agent down")
	}
	if err := a.runner.Status(ctx); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Errorf("STATUS with the agent down = %v, want plugin-not-available", err)
	}
	a.start()
	if err := a.runner.Status(ctx); err != nil {
		t.Errorf("STATUS after restart: %v", err)
	}
	// The restarted agent sees the interface gone and takes the port back.
	if st := a.pools(t)[0]; st.InUse != 0 {
		t.Errorf("after a DEL with the agent down and a restart, %d ports are still in use, want 0", st.InUse)
	}
}

// TestOVSPodsEndToEnd: the same through OVS br-int in userspace, with the port's external_ids set
// on ADD and the OVS port removed on DEL.
func TestOVSPodsEndToEnd(t *testing.T) {
	db := ovsdb(t)
	vsctl := func(args ...string) (string, error) {
		out, err := exec.Command("ovs-vsctl", append([]string{"--db=" + db, "--timeout=10"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	n := newNeutron(t)
	a := startAgent(t, n, "node-ovs", "ovs", "[binding]\novsdb_connection = "+db+"\n")
	ctx := context.Background()
	pods := newPods(t, 2, "ovs")
	for _, p := range pods {
		if _, err := a.runner.Add(ctx, p); err != nil {
			t.Fatalf("%v\n%s", err, a.log())
		}
	}
	tcpEcho(t, pods[0], pods[1])
	port := portOf(t, n, pods[0].Result.IPs[0].Address.IP.String())
	dev := "tap" + port.ID[:11]
	ids, err := vsctl("get", "Interface", dev, "external_ids")
	if err != nil {
		t.Fatalf("OVS interface %s: %v %s", dev, err, ids)
	}
	// OVS quotes a value only when it needs to: compare without quotes.
	unquoted := strings.ReplaceAll(ids, `"`, "")
	for _, want := range []string{"iface-id=" + port.ID, "attached-mac=" + port.MACAddress, "iface-status=active", "vm-uuid=" + pods[0].UID} {
		if !strings.Contains(unquoted, want) {
			t.Errorf("external_ids of %s = %s, missing %s", dev, ids, want)
		}
	}
	for _, p := range pods {
		if _, err := a.runner.Del(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := vsctl("list-ports", "br-int"); err != nil || strings.Contains(out, dev) {
		t.Errorf("OVS port %s still on br-int after DEL: %s %v", dev, out, err)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConfigChangeAppliedOnRestart is the seed's operation "edit the ConfigMap, delete the agent
// pod": the restarted agent applies the new pool settings and keeps the ports it had.
func TestConfigChangeAppliedOnRestart(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-reconf", "bridge", "")
	free := func() (int, []string) {
		ports, err := n.client.ListPorts(context.Background(), neutron.PortFilter{Tags: []string{neutron.NodeTag("node-reconf")}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range ports {
			ids = append(ids, p.ID)
		}
		for _, p := range a.pools(t) {
			if p.Network == n.fx.PodNetwork {
				return p.Free, ids
			}
		}
		return 0, ids
	}
	eventually(t, time.Minute, "the pool at ports_pool_min 3", func() (bool, string) { f, _ := free(); return f >= 3, fmt.Sprint(f) })
	_, before := free()

	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(conf), "ports_pool_min = 3", "ports_pool_min = 6", 1)
	if edited == string(conf) {
		t.Fatal("the harness's kuryr.conf has no ports_pool_min = 3")
	}
	if err := os.WriteFile(a.conf, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	a.stop(syscall.SIGTERM)
	a.start()
	var after []string
	eventually(t, time.Minute, "the pool at the new ports_pool_min 6", func() (bool, string) {
		f, ids := free()
		after = ids
		return f >= 6, fmt.Sprint(f)
	})
	for _, id := range before {
		if !slices.Contains(after, id) {
			t.Errorf("port %s of the old agent is not in the new agent's pool %v", id, after)
		}
	}
}

// ovsdb returns the OVSDB of the userspace OVS (hack/ovs-up.sh), whose br-int must exist.
func ovsdb(t *testing.T) string {
	t.Helper()
	db := os.Getenv("KURYR_TEST_OVSDB")
	if db == "" {
		db = "unix:" + envOr("KURYR_STATE_DIR", "/var/tmp/kuryr-test") + "/ovs/db.sock"
	}
	err := exec.Command("ovs-vsctl", "--db="+db, "--timeout=10", "br-exists", "br-int").Run()
	testutil.Require(t, err == nil, "userspace OVS with br-int (hack/ovs-up.sh) is not running at "+db)
	return db
}

// TestNoopStopFinishesDeletions: a noop agent (a port created per pod) stopped with SIGTERM right
// after its pods' DELs deletes their ports before it exits: none is left in Neutron for the next
// start to find.
func TestNoopStopFinishesDeletions(t *testing.T) {
	n := newNeutron(t)
	a := startAgent(t, n, "node-noop-stop", "bridge", "[kubernetes]\nvif_pool_driver = noop\n")
	ctx := context.Background()
	pods := newPods(t, 4, "noop")
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			if _, err := a.runner.Add(ctx, p); err != nil {
				t.Errorf("ADD %s: %v", p.Name, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("agent log:\n%s", a.log())
	}
	tags := []string{neutron.NodeTag(a.node), neutron.ClusterTag(a.cluster)}
	ports, err := n.client.ListPorts(ctx, neutron.PortFilter{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != len(pods) {
		t.Fatalf("%d ports after %d noop ADDs, want one per pod", len(ports), len(pods))
	}
	for _, p := range pods {
		if _, err := a.runner.Del(ctx, p); err != nil {
			t.Fatalf("DEL %s: %v", p.Name, err)
		}
	}
	a.stop(syscall.SIGTERM) // at once: the deletions are queued or in flight
	left, err := n.client.ListPorts(ctx, neutron.PortFilter{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		var ids []string
		for _, p := range left {
			ids = append(ids, p.ID)
		}
		t.Errorf("%d of the %d pods' ports left in Neutron after the agent stopped: %v\nagent log:\n%s", len(left), len(pods), ids, a.log())
	}
}
