package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kuryr-pools/kuryr/cni"
	"github.com/kuryr-pools/kuryr/pool"
)

type fakePools struct {
	mu       sync.Mutex
	free     []pool.Port
	inUse    map[string]pool.Port // by owner
	aborted  []string
	released []string
	marked   []string
	waitErr  error
	lastReq  pool.AcquireRequest
}

func (f *fakePools) Acquire(ctx context.Context, req pool.AcquireRequest) (pool.Port, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReq = req
	if len(f.free) == 0 {
		if req.OnWait != nil {
			req.OnWait("refill in flight")
		}
		return pool.Port{}, &pool.PoolEmptyError{Key: req.Key, Reason: "quota exceeded"}
	}
	p := f.free[len(f.free)-1]
	f.free = f.free[:len(f.free)-1]
	if f.inUse == nil {
		f.inUse = map[string]pool.Port{}
	}
	f.inUse[req.Owner] = p
	return p, nil
}

func (f *fakePools) Abort(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborted = append(f.aborted, id)
	for o, p := range f.inUse {
		if p.ID == id {
			delete(f.inUse, o)
			f.free = append(f.free, p)
		}
	}
	return nil
}

func (f *fakePools) Release(owner string) (pool.Port, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.inUse[owner]
	if !ok {
		return pool.Port{}, errors.New("unknown owner")
	}
	delete(f.inUse, owner)
	f.released = append(f.released, p.ID)
	return p, nil
}

func (f *fakePools) MarkInUse(p pool.Port, name, deviceID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marked = append(f.marked, p.ID+"="+name+"@"+deviceID)
}

type fakePlugger struct {
	mu         sync.Mutex
	plugged    map[string]*Attachment // by owner
	plugErr    error
	unplugged  []string
	ifnameDels []string
}

func (f *fakePlugger) Plug(_ context.Context, a *Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.plugErr != nil {
		return f.plugErr
	}
	if f.plugged == nil {
		f.plugged = map[string]*Attachment{}
	}
	f.plugged[a.Owner()] = a
	return nil
}

func (f *fakePlugger) Unplug(_ context.Context, a *Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.plugged, a.Owner())
	f.unplugged = append(f.unplugged, a.Owner())
	return nil
}

func (f *fakePlugger) UnplugIfName(_ context.Context, netns, ifName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ifnameDels = append(f.ifnameDels, netns+":"+ifName)
	return nil
}

func (f *fakePlugger) Check(_ context.Context, a *Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.plugged[a.Owner()]; !ok {
		return fmt.Errorf("link %s missing", a.IfName)
	}
	return nil
}

type staticNetworks struct{ n PodNetwork }

func (s staticNetworks) Resolve(context.Context, PodRef) (PodNetwork, error) { return s.n, nil }

type recordingNotifier struct {
	mu       sync.Mutex
	events   []string
	attached []string
}

func (r *recordingNotifier) Event(pod PodRef, typ, reason, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, pod.String()+" "+typ+" "+reason+": "+msg)
}

func (r *recordingNotifier) Attached(pod PodRef, a *Attachment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attached = append(r.attached, pod.String()+"="+a.Port.ID)
}

type fixture struct {
	svc      *Service
	pools    *fakePools
	plugger  *fakePlugger
	notifier *recordingNotifier
	netns    string
	ckptPath string
}

func newFixture(t *testing.T, nested bool, ports ...pool.Port) *fixture {
	t.Helper()
	dir := t.TempDir()
	ckptPath := filepath.Join(dir, "checkpoint.json")
	ckpt, err := OpenCheckpoint(ckptPath)
	if err != nil {
		t.Fatal(err)
	}
	netnsPath := filepath.Join(dir, "netns")
	if err := os.WriteFile(netnsPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fixture{pools: &fakePools{free: ports}, plugger: &fakePlugger{}, notifier: &recordingNotifier{}, netns: netnsPath, ckptPath: ckptPath}
	f.svc = &Service{
		Node: "node1", Pools: f.pools, Plugger: f.plugger, Checkpoint: ckpt, Notifier: f.notifier, PoolWait: time.Second,
		Networks: staticNetworks{PodNetwork{Project: "proj", NetworkID: "net1", SubnetIDs: []string{"sub1"}, SGs: pool.NewSGSet("sg1"),
			Subnet: SubnetInfo{ID: "sub1", NetworkID: "net1", CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1", MTU: 1450}}},
		Binding: Binding{Nested: nested, Parent: "ens3", DefaultVIFType: "bridge", LinuxBridge: "kuryr0", OVSBridge: "br-int"},
	}
	f.svc.SetReady(true)
	return f
}

func testPort(id string, vlan int) pool.Port {
	return pool.Port{ID: id, MAC: "fa:16:3e:00:00:01", VLAN: vlan, Key: pool.Key{Node: "node1", Project: "proj", Network: "net1"},
		FixedIPs: []pool.FixedIP{{SubnetID: "sub1", IP: "10.0.0.5"}}, SGs: pool.NewSGSet("sg1")}
}

func (f *fixture) req(cid string) *cni.Request {
	return &cni.Request{ContainerID: cid, Netns: f.netns, IfName: "eth0",
		Args:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod-" + cid + ";K8S_POD_UID=uid-" + cid,
		Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni"}`)}
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestAddPlugsAPooledPortAndDelReleasesIt(t *testing.T) {
	for _, nested := range []bool{true, false} {
		t.Run(fmt.Sprintf("nested=%v", nested), func(t *testing.T) {
			f := newFixture(t, nested, testPort("port-1", 101))
			ctx := context.Background()
			res, err := f.svc.Add(ctx, f.req("c1"))
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			if got := res.IPs[0].Address.String(); got != "10.0.0.5/24" {
				t.Errorf("result address %s, want 10.0.0.5/24", got)
			}
			if res.Interfaces[0].Mac != "fa:16:3e:00:00:01" || res.Interfaces[0].Mtu != 1450 || res.Interfaces[0].Sandbox != f.netns {
				t.Errorf("result interface %+v", res.Interfaces[0])
			}
			if len(res.Routes) != 1 || res.Routes[0].GW.String() != "10.0.0.1" {
				t.Errorf("result routes %v, want a default route via 10.0.0.1", res.Routes)
			}
			if f.pools.lastReq.Key != (pool.Key{Node: "node1", Project: "proj", Network: "net1"}) || f.pools.lastReq.Owner != "c1/eth0" {
				t.Errorf("acquire request %+v", f.pools.lastReq)
			}
			a := f.plugger.plugged["c1/eth0"]
			wantMode := "bridge"
			if nested {
				wantMode = "vlan"
			}
			if a == nil || a.Plug.Mode != wantMode || (nested && (a.Plug.VLAN != 101 || a.Plug.Parent != "ens3")) {
				t.Fatalf("plugged %+v, want mode %s", a, wantMode)
			}
			// The checkpoint on disk knows the attachment.
			ckpt, err := OpenCheckpoint(f.ckptPath)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := ckpt.Get("c1", "eth0"); !ok || got.Port.ID != "port-1" || got.Pod.String() != "demo/pod-c1" {
				t.Fatalf("checkpoint entry %+v, %v", got, ok)
			}
			if len(f.pools.marked) != 1 || f.pools.marked[0] != "port-1=demo/pod-c1@uid-c1" {
				t.Errorf("MarkInUse calls %v", f.pools.marked)
			}
			// A retried ADD returns the same port without taking another.
			res2, err := f.svc.Add(ctx, f.req("c1"))
			if err != nil || res2.IPs[0].Address.String() != "10.0.0.5/24" {
				t.Fatalf("retried Add: %v %v", res2, err)
			}
			// The same container in another netns is the runtime's error: named, and the port stays.
			other := f.req("c1")
			other.Netns = f.netns + "-other"
			if err := os.WriteFile(other.Netns, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Add(ctx, other); cniCode(err) != types.ErrInvalidNetNS || !strings.Contains(err.Error(), "DEL it first") {
				t.Errorf("ADD of an attached container in another netns: %v; want ErrInvalidNetNS", err)
			}
			if err := f.svc.Check(ctx, f.req("c1")); err != nil {
				t.Errorf("Check: %v", err)
			}
			if err := f.svc.Del(ctx, f.req("c1")); err != nil {
				t.Fatalf("Del: %v", err)
			}
			if len(f.pools.released) != 1 || f.pools.released[0] != "port-1" {
				t.Errorf("released %v", f.pools.released)
			}
			ckpt, _ = OpenCheckpoint(f.ckptPath)
			if _, ok := ckpt.Get("c1", "eth0"); ok {
				t.Error("checkpoint still holds the attachment after DEL")
			}
			if cl := ckpt.CoolingPorts(); len(cl) != 1 || cl[0].Port.ID != "port-1" {
				t.Errorf("cooling ports after DEL: %+v", cl)
			}
			// DEL again: idempotent, removes the interface by name only.
			if err := f.svc.Del(ctx, f.req("c1")); err != nil {
				t.Fatalf("second Del: %v", err)
			}
			if len(f.pools.released) != 1 || len(f.plugger.ifnameDels) != 1 {
				t.Errorf("second DEL released %v, deleted ifnames %v", f.pools.released, f.plugger.ifnameDels)
			}
			if err := f.svc.Check(ctx, f.req("c1")); cniCode(err) != types.ErrUnknownContainer {
				t.Errorf("Check after DEL = %v, want code %d", err, types.ErrUnknownContainer)
			}
		})
	}
}

func TestAddEmptyPoolIsTryAgainLaterWithAnEvent(t *testing.T) {
	f := newFixture(t, true)
	_, err := f.svc.Add(context.Background(), f.req("c1"))
	if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "quota exceeded") {
		t.Fatalf("Add on an empty pool = %v, want code 11 naming the reason", err)
	}
	if len(f.notifier.events) != 2 || !strings.Contains(f.notifier.events[0], "WaitingForPort") || !strings.Contains(f.notifier.events[1], "PoolExhausted") {
		t.Errorf("events %v", f.notifier.events)
	}
	if _, ok := f.svc.Checkpoint.Get("c1", "eth0"); ok {
		t.Error("a failed ADD left a checkpoint entry")
	}
}

func TestAddPlugFailureGivesThePortBack(t *testing.T) {
	f := newFixture(t, true, testPort("port-1", 7))
	f.plugger.plugErr = errors.New("netlink: operation not supported")
	_, err := f.svc.Add(context.Background(), f.req("c1"))
	if err == nil || !strings.Contains(err.Error(), "operation not supported") {
		t.Fatalf("Add = %v, want the plug error", err)
	}
	if len(f.pools.aborted) != 1 || f.pools.aborted[0] != "port-1" || len(f.pools.free) != 1 {
		t.Errorf("aborted %v, free %v: the port must go back to the pool", f.pools.aborted, f.pools.free)
	}
	if _, ok := f.svc.Checkpoint.Get("c1", "eth0"); ok {
		t.Error("checkpoint entry left after a failed plug")
	}
}

func TestBadInputIsRejectedWithoutTakingAPort(t *testing.T) {
	f := newFixture(t, true, testPort("port-1", 7))
	for _, tc := range []struct {
		name   string
		mutate func(r *cni.Request)
		code   uint
	}{
		{"no container", func(r *cni.Request) { r.ContainerID = "" }, types.ErrInvalidEnvironmentVariables},
		{"long ifname", func(r *cni.Request) { r.IfName = "a-very-long-interface-name" }, types.ErrInvalidEnvironmentVariables},
		{"missing netns", func(r *cni.Request) { r.Netns = "/nonexistent/netns" }, types.ErrInvalidNetNS},
		{"empty netns", func(r *cni.Request) { r.Netns = "" }, types.ErrInvalidEnvironmentVariables},
		{"malformed config", func(r *cni.Request) { r.Config = json.RawMessage(`{"cniVersion":`) }, types.ErrDecodingFailure},
		{"bad args", func(r *cni.Request) { r.Args = "K8S_POD_NAME" }, types.ErrInvalidEnvironmentVariables},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.req("c1")
			tc.mutate(r)
			if _, err := f.svc.Add(context.Background(), r); cniCode(err) != tc.code {
				t.Errorf("Add = %v, want code %d", err, tc.code)
			}
		})
	}
	if len(f.pools.free) != 1 {
		t.Errorf("bad input took a port: free %v", f.pools.free)
	}
	f.svc.SetReady(false)
	if _, err := f.svc.Add(context.Background(), f.req("c1")); cniCode(err) != types.ErrTryAgainLater {
		t.Errorf("Add before ready = %v, want code 11", err)
	}
	if err := f.svc.Status(context.Background()); cniCode(err) != types.ErrPluginNotAvailable {
		t.Errorf("Status before ready = %v, want code 50", err)
	}
}

func TestGCReleasesAttachmentsNotValid(t *testing.T) {
	f := newFixture(t, true, testPort("port-1", 7), testPort("port-2", 8))
	ctx := context.Background()
	for _, cid := range []string{"keep", "stale"} {
		if _, err := f.svc.Add(ctx, f.req(cid)); err != nil {
			t.Fatal(err)
		}
	}
	gc := &cni.Request{Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni",
		"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`)}
	if err := f.svc.GC(ctx, gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, ok := f.svc.Checkpoint.Get("keep", "eth0"); !ok {
		t.Error("GC released a valid attachment")
	}
	if _, ok := f.svc.Checkpoint.Get("stale", "eth0"); ok {
		t.Error("GC kept a stale attachment")
	}
	if len(f.pools.released) != 1 {
		t.Errorf("released %v, want one port", f.pools.released)
	}
	// Another network's attachments are not this GC's business.
	other := &cni.Request{Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"other","type":"kuryr-cni"}`)}
	if err := f.svc.GC(ctx, other); err != nil || len(f.pools.released) != 1 {
		t.Errorf("GC of another network: %v, released %v", err, f.pools.released)
	}
}

func TestProtocolOverUnixSocket(t *testing.T) {
	f := newFixture(t, true, testPort("port-1", 7))
	sock := filepath.Join(t.TempDir(), "run", "cni.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUnix(ctx, sock, SocketPolicy{}, CNIHandler(ctx, f.svc, NewMetrics())) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	})
	waitForSocket(t, sock)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600 (root only)", fi.Mode().Perm())
	}
	client := cni.NewClient(sock)
	body, err := client.Call(context.Background(), cni.PathAdd, f.req("c1"))
	if err != nil {
		t.Fatalf("ADD over the socket: %v", err)
	}
	if !strings.Contains(string(body), `"10.0.0.5/24"`) {
		t.Errorf("ADD result %s", body)
	}
	_, err = client.Call(context.Background(), cni.PathAdd, f.req("c2"))
	if cniCode(err) != types.ErrTryAgainLater {
		t.Errorf("ADD on an empty pool over the socket = %v, want code 11", err)
	}
	if _, err := client.Call(context.Background(), cni.PathDel, f.req("c1")); err != nil {
		t.Errorf("DEL over the socket: %v", err)
	}
	if _, err := client.Call(context.Background(), cni.PathStatus, &cni.Request{Config: json.RawMessage(`{}`)}); err != nil {
		t.Errorf("STATUS over the socket: %v", err)
	}
	// A second agent must not steal a live socket.
	if _, err := ListenUnix(sock, SocketPolicy{}); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Errorf("ListenUnix on a live socket = %v", err)
	}
}

func waitForSocket(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("socket %s never appeared", path)
}

func TestListenUnixRefusesUnsafePlaces(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(filepath.Join(open, "x.sock"), SocketPolicy{}); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("world-writable directory: %v", err)
	}
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file, SocketPolicy{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file in the way: %v", err)
	}
	// A stale socket (nobody serving) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	l, err := ListenUnix(stale, SocketPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	l, err = ListenUnix(stale, SocketPolicy{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
}

// A request body is one JSON object: a second one, or stray bytes after it, is refused with
// ErrDecodingFailure and takes no port.
func TestCNIRequestTrailingData(t *testing.T) {
	f := newFixture(t, true, testPort("port-1", 7))
	h := CNIHandler(context.Background(), f.svc, NewMetrics())
	good, err := json.Marshal(f.req("c1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		body     string
		wantCode uint
	}{
		{"second object", string(good) + `{"containerId":"c2"}`, types.ErrDecodingFailure},
		{"stray bytes", string(good) + ` x`, types.ErrDecodingFailure},
		{"trailing whitespace", string(good) + " \n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cni.PathAdd, strings.NewReader(tc.body)))
			var e types.Error
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if tc.wantCode == 0 {
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				return
			}
			if rec.Code == http.StatusOK || e.Code != tc.wantCode || !strings.Contains(e.Details, "data after the JSON object") {
				t.Fatalf("status %d, body %s; want error code %d naming the trailing data", rec.Code, rec.Body, tc.wantCode)
			}
			if len(f.pools.inUse) != 0 {
				t.Errorf("a refused request took a port: %v", f.pools.inUse)
			}
		})
	}
}
