package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

type fakeAdmin struct {
	mu       sync.Mutex
	node     string
	pools    map[pool.Key][]pool.Port
	max      int
	popErr   error
	freed    []pool.Key
	populate []string
}

func (f *fakeAdmin) Node() string { return f.node }

func (f *fakeAdmin) Populate(_ context.Context, key pool.Key, n int, force bool) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.popErr != nil {
		return 0, 0, f.popErr
	}
	f.populate = append(f.populate, fmt.Sprintf("%s:%d:%v", key.Network, n, force))
	capped := 0
	if !force && f.max > 0 && len(f.pools[key])+n > f.max {
		capped = len(f.pools[key]) + n - f.max
		n -= capped
	}
	for i := 0; i < n; i++ {
		f.pools[key] = append(f.pools[key], pool.Port{ID: fmt.Sprintf("port-%d", len(f.pools[key])), SGs: pool.NewSGSet("sg2", "sg1")})
	}
	return n, capped, nil
}

func (f *fakeAdmin) Free(_ context.Context, key pool.Key) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.pools[key])
	f.pools[key] = nil
	f.freed = append(f.freed, key)
	return n, nil
}

func (f *fakeAdmin) Keys() []pool.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []pool.Key
	for k := range f.pools {
		out = append(out, k)
	}
	return out
}

func (f *fakeAdmin) Stats(key pool.Key) pool.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return pool.Stats{Free: len(f.pools[key])}
}

func (f *fakeAdmin) FreePorts(key pool.Key) []pool.Port {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pool.Port(nil), f.pools[key]...)
}

var defaultKey = pool.Key{Node: "10.0.4.6", Project: "proj", Network: "net1"}

func startManage(t *testing.T, admin *fakeAdmin) string {
	t.Helper()
	m := &ManageServer{Admin: admin, Max: admin.max, DefaultPool: func(context.Context) (pool.Key, error) { return defaultKey, nil }}
	sock := filepath.Join(t.TempDir(), "kuryr_manage.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUnix(ctx, sock, SocketPolicy{}, m.Handler(ctx)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	})
	waitForSocket(t, sock)
	return sock
}

func TestManageAPI(t *testing.T) {
	admin := &fakeAdmin{node: "10.0.4.6", pools: map[pool.Key][]pool.Port{}, max: 10}
	sock := startManage(t, admin)
	c := manage.NewClient(sock)
	ctx := context.Background()
	raw := func(method, path, body string) (int, string) {
		t.Helper()
		resp, err := c.DoRaw(ctx, method, path, []byte(body), false)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode, string(resp.Body)
	}
	for _, tc := range []struct {
		name, method, path, body string
		wantStatus               int
		wantBody                 string
	}{
		{"list empty", "GET", manage.PathList, `{}`, 200, "Pools:\nThere are no pools"},
		{"list without a body", "GET", manage.PathList, ``, 200, "Pools:\nThere are no pools"},
		{"populate 3", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 3}`, 200, "Ports pool at ['10.0.4.6'] was populated with 3 ports."},
		{"populate default 1", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"]}`, 200, "Ports pool at ['10.0.4.6'] was populated with 1 ports."},
		{"list", "GET", manage.PathList, `{}`, 200, "Pools:\n[\"10.0.4.6\", \"proj\", \"net1\"] has 4 ports\n"},
		{"show old key", "GET", manage.PathShow, `{"pool_key": ["10.0.4.6", "proj", ["sg2", "sg1"]]}`, 200, "Pool ('10.0.4.6', 'proj', ('sg1', 'sg2')) ports are:\nport-0\nport-1\nport-2\nport-3\n"},
		{"show network key", "GET", manage.PathShow, `{"pool_key": ["10.0.4.6", "proj", "net1"]}`, 200, "Pool ('10.0.4.6', 'proj', 'net1') ports are:\nport-0\n"},
		{"show other SGs", "GET", manage.PathShow, `{"pool_key": ["10.0.4.6", "proj", ["sg9"]]}`, 200, "Pool ('10.0.4.6', 'proj', ('sg9',)) ports are:\nEmpty pool"},
		{"show wrong key", "GET", manage.PathShow, `{"pool_key": ["10.0.4.6", "proj"]}`, 400, manage.InvalidPoolKey},
		{"show unknown pool", "GET", manage.PathShow, `{"pool_key": ["10.0.4.6", "other", "net1"]}`, 404, "not found on this node"},
		{"show other trunk", "GET", manage.PathShow, `{"pool_key": ["10.0.0.9", "proj", "net1"]}`, 400, "this node serves trunk 10.0.4.6"},
		{"populate over max", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 20}`, 200, "was populated with 6 ports. 14 more were refused: ports_pool_max is 10."},
		{"populate full", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 1}`, 409, "is full (ports_pool_max = 10)"},
		{"populate forced", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 1, "force": true}`, 200, "was populated with 1 ports."},
		{"populate no trunks", "POST", manage.PathPopulate, `{"num_ports": 3}`, 400, "Trunk port IP(s) missing."},
		{"populate other trunk", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.5"]}`, 400, "Trunk 10.0.4.5 is not served by this node: this node serves trunk 10.0.4.6."},
		{"populate negative", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": -3}`, 400, "Invalid num_ports -3"},
		{"populate absurd", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 1000000}`, 400, "Invalid num_ports 1000000"},
		{"populate wrong type", "POST", manage.PathPopulate, `{"trunks": "10.0.4.6"}`, 400, "cannot unmarshal string"},
		{"populate unknown field", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "nun_ports": 3}`, 400, `unknown field "nun_ports"`},
		{"populate malformed", "POST", manage.PathPopulate, `{"trunks": [`, 400, "invalid JSON body"},
		{"populate trailing data", "POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"]} {}`, 400, "data after the JSON object"},
		{"populate with GET", "GET", manage.PathPopulate, `{}`, 405, "Method not allowed."},
		{"unknown endpoint", "POST", "/dropPools", `{}`, 404, "Method not allowed."},
		{"free one", "POST", manage.PathFree, `{"trunks": ["10.0.4.6"]}`, 200, "Ports pool belonging to ['10.0.4.6'] was freed."},
		{"free all", "POST", manage.PathFree, `{}`, 200, "Ports pool belonging to all was freed."},
		{"free other trunk", "POST", manage.PathFree, `{"trunks": ["10.0.4.5"]}`, 400, "not served by this node"},
	} {
		status, body := raw(tc.method, tc.path, tc.body)
		if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, status, body, tc.wantStatus, tc.wantBody)
		}
	}
	if got := len(admin.populate); got != 5 { // the accepted requests only: 3, 1, 20 (capped), 1 (full), 1 (forced)
		t.Errorf("populate calls %v, want 5: rejected requests must not reach the pools", admin.populate)
	}
	// Bodies over the limit are refused without being read whole.
	big := `{"trunks": ["` + strings.Repeat("1", maxManageBody) + `"]}`
	if status, body := raw("POST", manage.PathPopulate, big); status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d %q", status, body)
	}
	// JSON answers carry the same content.
	resp, err := c.Do(ctx, "GET", manage.PathList, struct{}{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var ans manage.Answer
	if err := json.Unmarshal(resp.Body, &ans); err != nil || len(ans.Pools) != 1 || ans.Pools[0].Network != "net1" || !strings.HasPrefix(ans.Message, "Pools:") {
		t.Errorf("JSON list: %s (%v)", resp.Body, err)
	}
	for _, tt := range []struct {
		err    error
		status int
		want   string
	}{
		{fmt.Errorf("populate pool x: %w", pool.ErrNoPools), 409, "keeps no pools: [kubernetes] vif_pool_driver is noop"},
		{fmt.Errorf("populate pool x: %w", pool.ErrNotReady), 503, "still loading its pools"},
	} {
		admin.popErr = tt.err
		if status, body := raw("POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 3}`); status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("populate with %v: %d %q, want %d naming %q", tt.err, status, body, tt.status, tt.want)
		}
	}
	admin.popErr = errors.New("neutron: 500 Internal Server Error")
	if status, body := raw("POST", manage.PathPopulate, `{"trunks": ["10.0.4.6"], "num_ports": 3}`); status != 500 ||
		!strings.Contains(body, "Error while populating pool ['10.0.4.6'] with 3 ports.") || !strings.Contains(body, "neutron: 500") {
		t.Errorf("populate error: %d %q", status, body)
	}
}

// TestManageSeedCurlCommands runs seed 002's curl commands byte for byte against the socket.
func TestManageSeedCurlCommands(t *testing.T) {
	curl, err := exec.LookPath("curl")
	testutil.Require(t, err == nil, "curl is not installed (the seed's commands are curl commands)")
	admin := &fakeAdmin{node: "10.0.4.6", pools: map[pool.Key][]pool.Port{}}
	sock := startManage(t, admin)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"http://localhost/populatePool", "-H", "Content-Type: application/json", "-X", "POST", "-d", `{"trunks": ["10.0.4.6"], "num_ports": 3}`}, "Ports pool at ['10.0.4.6'] was populated with 3 ports."},
		{[]string{"http://localhost/listPools", "-H", "Content-Type: application/json", "-X", "GET", "-d", `{}`}, "Pools:\n[\"10.0.4.6\", \"proj\", \"net1\"] has 3 ports\n"},
		{[]string{"http://localhost/showPool", "-H", "Content-Type: application/json", "-X", "GET", "-d", `{"pool_key": ["10.0.4.6", "proj", ["sg1", "sg2"]]}`}, "Pool ('10.0.4.6', 'proj', ('sg1', 'sg2')) ports are:\nport-0\nport-1\nport-2\n"},
		{[]string{"http://localhost/freePool", "-H", "Content-Type: application/json", "-X", "POST", "-d", `{"trunks": ["10.0.4.6"]}`}, "Ports pool belonging to ['10.0.4.6'] was freed."},
	} {
		cmd := exec.Command(curl, append([]string{"-sS", "--fail-with-body", "--unix-socket", sock}, tc.args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil || out.String() != tc.want {
			t.Errorf("curl %s: %v\n got %q\nwant %q", tc.args[0], err, out.String(), tc.want)
		}
	}
}

func TestKuryrPoolsCLI(t *testing.T) {
	admin := &fakeAdmin{node: "10.0.4.6", pools: map[pool.Key][]pool.Port{}}
	sock := startManage(t, admin)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := manage.RunCLI(context.Background(), append(args[:1:1], append([]string{"--socket", sock}, args[1:]...)...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, _ := run("create", "--trunks", "10.0.4.6", "-n", "3"); code != 0 || out != "Ports pool at ['10.0.4.6'] was populated with 3 ports.\n" {
		t.Errorf("create: %d %q", code, out)
	}
	if code, out, _ := run("list", "-t", "5"); code != 0 || !strings.Contains(out, `["10.0.4.6", "proj", "net1"] has 3 ports`) {
		t.Errorf("list: %d %q", code, out)
	}
	if code, out, _ := run("show", "--trunk", "10.0.4.6", "-p", "proj", "--sg", "sg1", "sg2"); code != 0 || !strings.HasSuffix(out, "port-0\nport-1\nport-2\n") {
		t.Errorf("show: %d %q", code, out)
	}
	if code, out, _ := run("list", "-o", "json"); code != 0 || !strings.Contains(out, `"free":3`) {
		t.Errorf("list -o json: %d %q", code, out)
	}
	if code, _, errOut := run("create", "--trunks", "10.9.9.9", "10.0.4.6"); code != 1 || !strings.Contains(errOut, "400 Bad Request") || !strings.Contains(errOut, "not served by this node") {
		t.Errorf("create on another trunk: %d %q", code, errOut)
	}
	if code, _, errOut := run("create"); code != 2 || !strings.Contains(errOut, "--trunks") {
		t.Errorf("create without trunks: %d %q", code, errOut)
	}
	if code, _, errOut := run("show", "--trunk", "10.0.4.6"); code != 2 || !strings.Contains(errOut, "required") {
		t.Errorf("show without project: %d %q", code, errOut)
	}
	var out bytes.Buffer
	if code := manage.RunCLI(context.Background(), []string{"--socket", sock, "list"}, &out, &bytes.Buffer{}); code != 0 || !strings.HasPrefix(out.String(), "Pools:") {
		t.Errorf("--socket before the command: %d %q", code, out.String())
	}
	if code, out, _ := run("free"); code != 0 || out != "Ports pool belonging to all was freed.\n" {
		t.Errorf("free: %d %q", code, out)
	}
	var errb bytes.Buffer
	if code := manage.RunCLI(context.Background(), []string{"list", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &bytes.Buffer{}, &errb); code != 1 || !strings.Contains(errb.String(), "none.sock") {
		t.Errorf("missing socket: %d %q", code, errb.String())
	}
	for _, cmd := range []string{"create", "free", "list", "show"} {
		errb.Reset()
		if code := manage.RunCLI(context.Background(), []string{cmd, "-h"}, &bytes.Buffer{}, &errb); code != 0 || !strings.Contains(errb.String(), "-t") {
			t.Errorf("%s -h: %d %q", cmd, code, errb.String())
		}
	}
}
