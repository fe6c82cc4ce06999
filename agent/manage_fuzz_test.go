package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/pool"
)

// fuzzSocketGroup is the management socket group of the fuzzed server.
const fuzzSocketGroup = 4242

// FuzzManageAPI sends one arbitrary request (method, path, body, the peer's uid and gid, text or
// JSON answer) to the pool manager API over fake pools. No panic; a peer that is neither root nor
// in the socket group is refused; a refused or malformed request never reaches the pools; an
// accepted populatePool or freePool reaches them exactly once, with what the body asked.
func FuzzManageAPI(f *testing.F) {
	node := defaultKey.Node
	for _, s := range []struct {
		method, path, body string
	}{
		// seed 002's curl commands and the kuryr-pools CLI
		{"POST", "/populatePool", `{"trunks": ["10.0.4.6"], "num_ports": 3}`},
		{"GET", "/listPools", `{}`},
		{"GET", "/showPool", `{"pool_key": ["10.0.4.6", "proj", ["sg1", "sg2"]]}`},
		{"POST", "/freePool", `{"trunks": ["10.0.4.6"]}`},
		{"GET", "http://localhost/listPools", ``},
		{"GET", "/showPool", `{"pool_key": ["10.0.4.6", "proj", "net1"]}`},
		{"POST", "/populatePool", `{"trunks": ["10.0.4.6"], "num_ports": 9, "force": true}`},
		{"POST", "/freePool", `{}`},
		// refused
		{"POST", "/populatePool", `{"trunks": ["10.0.4.5"]}`},
		{"POST", "/populatePool", `{"trunks": ["10.0.4.6"], "num_ports": -3}`},
		{"POST", "/populatePool", `{"trunks": ["10.0.4.6"], "nun_ports": 3}`},
		{"POST", "/populatePool", `{"trunks": ["10.0.4.6"]} {}`},
		{"POST", "/populatePool", `{"trunks": "10.0.4.6"}`},
		{"GET", "/populatePool", `{}`},
		{"POST", "/dropPools", `{}`},
		{"GET", "/showPool", `{"pool_key": ["10.0.4.6", "proj"]}`},
		{"POST", "/freePool", `{"trunks": ["10.0.4.5"]}`},
	} {
		f.Add(s.method, s.path, []byte(s.body), uint32(0), uint32(0), false)
	}
	f.Add("POST", "/populatePool", []byte(`{"trunks": ["10.0.4.6"], "num_ports": 3}`), uint32(1000), uint32(fuzzSocketGroup), true)
	f.Add("POST", "/freePool", []byte(`{}`), uint32(65534), uint32(65534), true)
	f.Add("GET", "/listPools", []byte(`{}`), uint32(1000), uint32(1000), false)

	f.Fuzz(func(t *testing.T, method, path string, body []byte, uid, gid uint32, wantJSON bool) {
		admin := &fakeAdmin{node: node, max: 5, pools: map[pool.Key][]pool.Port{
			defaultKey: {{ID: "port-a", SGs: pool.NewSGSet("sg1", "sg2")}, {ID: "port-b", SGs: pool.NewSGSet("sg1", "sg2")}},
		}}
		keysBefore := len(admin.pools)
		m := &ManageServer{Admin: admin, Max: admin.max, Policy: SocketPolicy{Group: "4242"},
			DefaultPool: func(context.Context) (pool.Key, error) { return defaultKey, nil }}
		ctx := klog.NewContext(context.Background(), logr.Discard())
		h := m.Handler(ctx)

		req := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: "localhost", RequestURI: path}
		if wantJSON {
			req.Header.Set("Accept", "application/json")
		}
		// PID 0 has no /proc entry: the peer's groups are its gid alone.
		req = req.WithContext(context.WithValue(context.Background(), peerKey{}, PeerCred{PID: 0, UID: int(uid), GID: int(gid)}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		status, out := rec.Code, rec.Body.String()

		if strings.TrimSpace(out) == "" {
			t.Fatalf("%s %q answered %d with an empty body", method, path, status)
		}
		if wantJSON {
			var ans manage.Answer
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || strings.TrimSpace(ans.Message) == "" {
				t.Fatalf("%s %q: JSON answer %q has no message (%v)", method, path, out, err)
			}
		}
		populates, frees := len(admin.populate), len(admin.freed)
		if uid != 0 && gid != fuzzSocketGroup {
			if status != http.StatusForbidden || populates+frees != 0 {
				t.Fatalf("peer uid %d gid %d: %d %q, %d populate and %d free calls; want 403 and none", uid, gid, status, out, populates, frees)
			}
			return
		}
		switch {
		case status == http.StatusConflict:
			// The pool is full: Populate ran and created nothing.
			if populates != 1 || frees != 0 || !strings.Contains(out, "is full") {
				t.Fatalf("409 %q after %d populate and %d free calls", out, populates, frees)
			}
			return
		case status >= 400:
			if populates+frees != 0 {
				t.Fatalf("%s %q refused with %d %q, but the pools saw %v populate and %v free calls", method, path, status, out, admin.populate, admin.freed)
			}
			return
		case status != http.StatusOK:
			t.Fatalf("%s %q answered %d %q", method, path, status, out)
		}
		switch {
		case strings.HasSuffix(path, manage.PathPopulate):
			var want manage.PopulateRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&want); err != nil && strings.TrimSpace(string(body)) != "" {
				t.Fatalf("populatePool accepted a body that does not decode strictly: %q: %v", body, err)
			}
			n := 1
			if want.NumPorts != nil {
				n = *want.NumPorts
			}
			if method != http.MethodPost || len(want.Trunks) == 0 || n < 1 || n > manage.MaxPopulate {
				t.Fatalf("populatePool accepted %s %q", method, body)
			}
			for _, tr := range want.Trunks {
				if tr != node {
					t.Fatalf("populatePool accepted trunk %q; this node is %q", tr, node)
				}
			}
			if populates != 1 || frees != 0 {
				t.Fatalf("populatePool: %v populate and %v free calls, want one populate", admin.populate, admin.freed)
			}
		case strings.HasSuffix(path, manage.PathFree):
			if method != http.MethodPost || populates != 0 || frees != keysBefore {
				t.Fatalf("%s freePool: %v populate and %v free calls, want a free of each of the %d pools", method, admin.populate, admin.freed, keysBefore)
			}
		case strings.HasSuffix(path, manage.PathList), strings.HasSuffix(path, manage.PathShow):
			if method != http.MethodGet || populates+frees != 0 {
				t.Fatalf("%s %q: %v populate and %v free calls, want none", method, path, admin.populate, admin.freed)
			}
		default:
			t.Fatalf("%s %q answered 200: no such endpoint", method, path)
		}
	})
}
