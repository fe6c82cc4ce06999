package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/cni"
	"github.com/kuryr-pools/kuryr/pool"
)

// memBackend is a Neutron of fuzzPorts ports for the real pool.Driver. Nothing runs the driver
// in the background, so any port created or deleted is a request reaching Neutron that should not.
type memBackend struct {
	mu               sync.Mutex
	created, deleted int
}

const fuzzPorts = 3

var fuzzKey = pool.Key{Node: "node1", Project: "proj", Network: "net1"}

func (b *memBackend) Node() string { return fuzzKey.Node }

func (b *memBackend) ListPorts(context.Context) ([]pool.ListedPort, error) {
	var out []pool.ListedPort
	for i := 0; i < fuzzPorts; i++ {
		out = append(out, pool.ListedPort{Port: pool.Port{ID: fmt.Sprintf("port-%d", i), Key: fuzzKey, MAC: fmt.Sprintf("fa:16:3e:00:00:%02x", i),
			VLAN: 100 + i, SGs: pool.NewSGSet("sg1"), FixedIPs: []pool.FixedIP{{SubnetID: "sub1", IP: fmt.Sprintf("10.0.0.%d", 10+i)}}},
			Name: pool.AvailablePortName, Attached: true})
	}
	return out, nil
}

func (b *memBackend) CreatePorts(context.Context, pool.CreateRequest) ([]pool.Port, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.created++
	return nil, fmt.Errorf("memBackend creates no ports")
}

func (b *memBackend) DeletePorts(_ context.Context, ports []pool.Port) map[string]error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted += len(ports)
	return nil
}

func (b *memBackend) ResetPort(context.Context, pool.Port) error                 { return nil }
func (b *memBackend) UpdateSGs(context.Context, pool.Port, pool.SGSet) error     { return nil }
func (b *memBackend) MarkInUse(context.Context, pool.Port, string, string) error { return nil }

// fuzzNetns is the placeholder the seeds use for a network namespace path that exists; fuzzNetns2
// is a second one (a retried ADD from another netns).
const (
	fuzzNetns  = "@NETNS@"
	fuzzNetns2 = "@NETNS2@"
)

func fuzzBody(cid, ifName, netns, args, config string) []byte {
	b, _ := json.Marshal(&cni.Request{ContainerID: cid, IfName: ifName, Netns: netns, Args: args, Config: json.RawMessage(config)})
	return b
}

const fuzzConf = `{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni"}`

func fuzzArgs(name string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=" + name + ";K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=uid-" + name
}

// fuzzDir is where the checkpoints go: tmpfs when there is one, as every ADD and DEL fsyncs.
func fuzzDir(t *testing.T) string {
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "kuryr-fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cniServerRig is a Service on the real pool driver and checkpoint, with a fake plugger, behind
// CNIHandler.
type cniServerRig struct {
	svc            *Service
	driver         *pool.Driver
	backend        *memBackend
	plugger        *fakePlugger
	h              http.Handler
	netns, netns2  string
	ckptPath       string
	live           map[string]string // (containerID, ifName) JSON -> the IP its successful ADD returned
	requestsServed int
}

func newCNIServerRig(t *testing.T) *cniServerRig {
	dir := fuzzDir(t)
	r := &cniServerRig{backend: &memBackend{}, plugger: &fakePlugger{}, ckptPath: filepath.Join(dir, "checkpoint.json"),
		netns: filepath.Join(dir, "netns1"), netns2: filepath.Join(dir, "netns2"), live: map[string]string{}}
	for _, p := range []string{r.netns, r.netns2} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ckpt, err := OpenCheckpoint(r.ckptPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := klog.NewContext(context.Background(), logr.Discard())
	r.driver = pool.NewDriver(r.backend, pool.DriverOptions{Limits: pool.Limits{Batch: 1}})
	if _, err := r.driver.Recover(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	r.svc = &Service{Node: fuzzKey.Node, Pools: r.driver, Plugger: r.plugger, Checkpoint: ckpt, Notifier: &recordingNotifier{}, PoolWait: time.Millisecond,
		Networks: staticNetworks{PodNetwork{Project: fuzzKey.Project, NetworkID: fuzzKey.Network, SubnetIDs: []string{"sub1"}, SGs: pool.NewSGSet("sg1"),
			Subnet: SubnetInfo{ID: "sub1", NetworkID: fuzzKey.Network, CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1", MTU: 1450}}},
		Binding: Binding{Nested: true, Parent: "ens3"}}
	r.svc.SetReady(true)
	r.h = CNIHandler(ctx, r.svc, NewMetrics())
	return r
}

// malformed says, independently of the Service, whether a CNI request is one the agent must refuse
// as bad input (4xx) rather than try.
func (r *cniServerRig) malformed(cmd string, body []byte) string {
	req := &cni.Request{}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(req); err != nil {
		return "undecodable body: " + err.Error()
	}
	switch cmd {
	case "status":
		return ""
	case "gc":
		if _, err := cni.LoadNetConf(req.Config); err != nil {
			return "config: " + err.Error()
		}
		return ""
	}
	if req.ContainerID == "" {
		return "no container ID"
	}
	if err := utils.ValidateContainerID(req.ContainerID); err != nil {
		return "container ID: " + err.Error()
	}
	if err := utils.ValidateInterfaceName(req.IfName); err != nil {
		return "ifname: " + err.Error()
	}
	if cmd != "del" {
		if req.Netns == "" {
			return "no netns"
		}
		if _, err := os.Stat(req.Netns); err != nil {
			return "netns: " + err.Error()
		}
	}
	if _, err := cni.LoadNetConf(req.Config); err != nil {
		return "config: " + err.Error()
	}
	if _, err := cni.ParseK8sArgs(req.Args); err != nil {
		return "args: " + err.Error()
	}
	return ""
}

// serve sends one request and checks its answer.
func (r *cniServerRig) serve(t *testing.T, target string, body []byte) {
	method, path, ok := strings.Cut(target, " ")
	if !ok {
		method, path = http.MethodPost, target
	}
	if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") {
		method = http.MethodPost // not a token: no HTTP server would hand it to the handler
	}
	body = bytes.ReplaceAll(body, []byte(fuzzNetns2), []byte(r.netns2))
	body = bytes.ReplaceAll(body, []byte(fuzzNetns), []byte(r.netns))
	req := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: "kuryr", RequestURI: path}
	req = req.WithContext(context.Background())
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	r.requestsServed++
	status, out := rec.Code, rec.Body.Bytes()

	cmd, known := strings.CutPrefix(path, "/v1/cni/")
	known = known && (cmd == "add" || cmd == "del" || cmd == "check" || cmd == "gc" || cmd == "status")
	if !known || (method != http.MethodPost && !(cmd == "status" && (method == http.MethodGet || method == http.MethodHead))) {
		// Not an endpoint: the mux refuses it (or redirects to the cleaned path), nothing else.
		if status < 300 || status >= 500 {
			t.Fatalf("%s %q answered %d %q, want a refusal", method, path, status, out)
		}
		return
	}
	if method != http.MethodPost {
		return // GET status: the readiness probe
	}
	if status != http.StatusOK {
		var e types.Error
		if err := json.Unmarshal(out, &e); err != nil || e.Code == 0 || strings.TrimSpace(e.Msg) == "" {
			t.Fatalf("%s %s answered %d with %q: not a CNI error with a code and a message (%v)", method, path, status, out, err)
		}
	}
	if why := r.malformed(cmd, body); why != "" {
		if status < 400 || status >= 500 {
			t.Fatalf("%s %s with a bad request (%s) answered %d %q, want 4xx", method, path, why, status, out)
		}
		return
	}
	if cmd == "add" && status == http.StatusOK {
		res, err := current.NewResult(out)
		if err != nil {
			t.Fatalf("ADD answered 200 with %q: not a CNI result: %v", out, err)
		}
		cur := res.(*current.Result)
		if len(cur.IPs) != 1 {
			t.Fatalf("ADD result %q: want one IP", out)
		}
		req := &cni.Request{}
		_ = json.Unmarshal(body, req)
		pair, _ := json.Marshal([2]string{req.ContainerID, req.IfName})
		r.live[string(pair)] = cur.IPs[0].Address.IP.String()
	}
	r.checkLive(t)
}

// checkLive: every (container, ifname) whose ADD succeeded and that the checkpoint still holds is
// attached under its own name, with the address its ADD returned, and no two hold one address.
func (r *cniServerRig) checkLive(t *testing.T) {
	byIP := map[string]string{}
	for pair, ip := range r.live {
		var cid [2]string
		_ = json.Unmarshal([]byte(pair), &cid)
		a, ok := r.svc.Checkpoint.Get(cid[0], cid[1])
		if !ok {
			delete(r.live, pair) // released by DEL or GC
			continue
		}
		if a.ContainerID != cid[0] || a.IfName != cid[1] {
			t.Fatalf("container %q interface %q resolves to the attachment of container %q interface %q (port %s)",
				cid[0], cid[1], a.ContainerID, a.IfName, a.Port.ID)
		}
		if other, dup := byIP[ip]; dup {
			t.Fatalf("address %s given to %s and %s", ip, other, pair)
		}
		byIP[ip] = pair
	}
}

// checkInvariants compares the checkpoint (in memory and on disk), the pool driver, the plugged
// interfaces and Neutron after a run of requests.
func (r *cniServerRig) checkInvariants(t *testing.T) {
	atts := r.svc.Checkpoint.Attachments()
	ports := map[string]string{}
	for _, a := range atts {
		if prev, dup := ports[a.Port.ID]; dup {
			t.Fatalf("port %s attached to both %s and %s", a.Port.ID, prev, a.Owner())
		}
		ports[a.Port.ID] = a.Owner()
		if st, ok := r.driver.PortState(a.Port.ID); !ok || st != pool.StateInUse {
			t.Fatalf("port %s of %s is %q in the pool, want in use", a.Port.ID, a.Owner(), st)
		}
		if p := r.plugger.plugged[a.Owner()]; p == nil || p.Port.ID != a.Port.ID {
			t.Fatalf("attachment %s (port %s) is not plugged (plugged: %v)", a.Owner(), a.Port.ID, p)
		}
	}
	if len(r.plugger.plugged) != len(atts) {
		t.Fatalf("%d interfaces plugged, %d attachments in the checkpoint", len(r.plugger.plugged), len(atts))
	}
	cooling := r.svc.Checkpoint.CoolingPorts()
	for _, c := range cooling {
		if _, inUse := ports[c.Port.ID]; inUse {
			t.Fatalf("port %s is both cooling and attached", c.Port.ID)
		}
		if st, _ := r.driver.PortState(c.Port.ID); st != pool.StateCooling {
			t.Fatalf("port %s cooling in the checkpoint is %q in the pool", c.Port.ID, st)
		}
	}
	st := r.driver.Stats(fuzzKey)
	if st.InUse != len(atts) || st.Cooling != len(cooling) || st.Free+st.InUse+st.Cooling+st.Recycling+st.Deleting != fuzzPorts {
		t.Fatalf("pool %+v, checkpoint %d attached %d cooling, Neutron %d ports", st, len(atts), len(cooling), fuzzPorts)
	}
	if r.backend.created != 0 || r.backend.deleted != 0 {
		t.Fatalf("requests created %d and deleted %d ports in Neutron", r.backend.created, r.backend.deleted)
	}
	disk, err := OpenCheckpoint(r.ckptPath)
	if err != nil {
		t.Fatalf("the checkpoint on disk does not load: %v", err)
	}
	onDisk := disk.Attachments()
	if len(onDisk) != len(atts) || len(disk.CoolingPorts()) != len(cooling) {
		t.Fatalf("checkpoint on disk has %d attachments %d cooling, in memory %d and %d", len(onDisk), len(disk.CoolingPorts()), len(atts), len(cooling))
	}
	for i := range onDisk {
		if onDisk[i].Owner() != atts[i].Owner() || onDisk[i].Port.ID != atts[i].Port.ID {
			t.Fatalf("checkpoint on disk has %s on %s, in memory %s on %s", onDisk[i].Owner(), onDisk[i].Port.ID, atts[i].Owner(), atts[i].Port.ID)
		}
	}
}

// FuzzCNIServer sends four arbitrary requests (target "METHOD PATH" or just a path for POST, and a
// body) to the agent's CNI handler on the real pool driver and checkpoint. No panic; every answer
// other than 200 is a CNI error with a code and a message; a malformed request gets a 4xx; and after
// each request no two containers hold one address, and at the end checkpoint, pool, plugged
// interfaces and Neutron agree.
func FuzzCNIServer(f *testing.F) {
	add, del, check, gc, status := cni.PathAdd, cni.PathDel, cni.PathCheck, cni.PathGC, cni.PathStatus
	req := func(cid string) []byte { return fuzzBody(cid, "eth0", fuzzNetns, fuzzArgs("pod-"+cid), fuzzConf) }
	gcBody := func(valid string) []byte {
		return fuzzBody("", "", "", "", `{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","cni.dev/valid-attachments":[`+valid+`]}`)
	}
	for _, s := range [][8]any{
		{add, req("c1"), add, req("c2"), del, req("c1"), check, req("c2")},
		{add, req("c1"), add, req("c1"), del, req("c1"), del, req("c1")},
		{add, req("c1"), gc, gcBody(`{"containerID":"c2","ifname":"eth0"}`), status, []byte(`{"config":{}}`), add, req("c2")},
		{add, req("c1"), add, req("c2"), add, req("c3"), add, req("c4")},
		{add, req("c1"), add, fuzzBody("c1", "eth0", fuzzNetns2, fuzzArgs("pod-c1"), fuzzConf), check, req("c1"), del, fuzzBody("c1", "eth0", "", "", fuzzConf)},
		{add, fuzzBody("c1", "eth1", fuzzNetns, fuzzArgs("p"), fuzzConf), add, fuzzBody("c1", "eth0", fuzzNetns, fuzzArgs("p"), fuzzConf), del, req("c1"), gc, gcBody("")},
		{add, []byte(`{"containerId":"c1","ifName":"eth0","netns":"@NETNS@","config":{"cniVersion":`), add, []byte(`not json`), "GET " + add, req("c1"), "/v1/cni/remove", req("c1")},
		{add, fuzzBody("c1", "a-very-long-interface-name", fuzzNetns, "", fuzzConf), add, fuzzBody("c1", "eth0", "/nonexistent", "", fuzzConf),
			add, fuzzBody("c1", "eth0", fuzzNetns, "K8S_POD_NAME", fuzzConf), add, fuzzBody("c1", "eth0", fuzzNetns, "", `{"type":"bridge"}`)},
		{add, []byte(`{}`), del, []byte(`null`), "GET " + status, []byte(nil), "POST /v1/cni/../cni/add", req("c1")},
		{add, fuzzBody("c1", "eth0", fuzzNetns, "", `{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","socketPath":"/run/kuryr/cni.sock","timeoutSeconds":90}`),
			add, fuzzBody("c2", "net1", fuzzNetns, fuzzArgs("p2"), fuzzConf), del, fuzzBody("c2", "net1", fuzzNetns, "", fuzzConf), check, req("c2")},
	} {
		f.Add(s[0].(string), s[1].([]byte), s[2].(string), s[3].([]byte), s[4].(string), s[5].([]byte), s[6].(string), s[7].([]byte))
	}
	f.Fuzz(func(t *testing.T, t1 string, b1 []byte, t2 string, b2 []byte, t3 string, b3 []byte, t4 string, b4 []byte) {
		r := newCNIServerRig(t)
		r.serve(t, t1, b1)
		r.serve(t, t2, b2)
		r.serve(t, t3, b3)
		r.serve(t, t4, b4)
		r.checkInvariants(t)
	})
}
