package neutron_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// Tests of the adapter's own behaviour under faults, on the stand-in only (the real server cannot
// be made to fail on cue).

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name      string
		inject    func(s *fakeneutron.Server)
		call      func(e *env) error
		wantErr   bool
		op        string
		wantCount int // requests of op
	}{
		{"GET retried on 503", func(s *fakeneutron.Server) { s.FailNext("GET", "/v2.0/subnets", 503, 2) },
			func(e *env) error { _, err := e.c.Subnet(e.ctx, e.fx.PodSubnet); return err }, false, "subnets.get", 3},
		{"GET not retried on 500", func(s *fakeneutron.Server) { s.FailNext("GET", "/v2.0/subnets", 500, 1) },
			func(e *env) error { _, err := e.c.Subnet(e.ctx, e.fx.PodSubnet); return err }, true, "subnets.get", 1},
		{"GET gives up after MaxRetries", func(s *fakeneutron.Server) { s.FailNext("GET", "/v2.0/subnets", 502, 100) },
			func(e *env) error { _, err := e.c.Subnet(e.ctx, e.fx.PodSubnet); return err }, true, "subnets.get", 4},
		{"POST not retried on 503 without Retry-After", func(s *fakeneutron.Server) { s.FailNext("POST", "/v2.0/ports", 503, 1) },
			func(e *env) error { _, err := e.c.CreatePorts(e.ctx, e.specs(2, "n")); return err }, true, "ports.bulk_create", 1},
		{"POST retried on 429 with Retry-After", func(s *fakeneutron.Server) { s.ThrottleNext("POST", "/v2.0/ports", 0, 1) },
			func(e *env) error { _, err := e.c.CreatePorts(e.ctx, e.specs(2, "n")); return err }, false, "ports.bulk_create", 2},
		{"PUT not retried on 502", func(s *fakeneutron.Server) { s.FailNext("PUT", "/v2.0/trunks", 502, 1) },
			func(e *env) error {
				_, err := e.c.AddSubports(e.ctx, e.fx.Trunks[0].Trunk, []neutron.Subport{{PortID: e.create(e.specs(1, "n"))[0].ID, SegmentationID: 7}})
				return err
			}, true, "trunks.add_subports", 1},
		{"DELETE retried after a lost answer, then 404 is done", func(s *fakeneutron.Server) { s.FailAfterNext("DELETE", "/v2.0/ports/", 502, 1) },
			func(e *env) error { return e.c.DeletePort(e.ctx, e.create(e.specs(1, "n"))[0].ID) }, false, "ports.delete", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := fakeTarget(t)
			e := newEnv(t, tg)
			e.c = e.newClient(neutron.ClientOptions{MaxRetries: 3})
			tc.inject(tg.fake)
			err := tc.call(e)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
			if got := e.c.Stats()[tc.op].Count; got != tc.wantCount {
				t.Errorf("%s: %d requests, want %d\n%s", tc.op, got, tc.wantCount, e.c.Stats())
			}
		})
	}
}

func TestBulkCreateWithLostAnswerLeavesNothing(t *testing.T) {
	tg := fakeTarget(t)
	e := newEnv(t, tg)
	before := tg.fake.PortCount()
	tg.fake.FailAfterNext("POST", "/v2.0/ports", 502, 1)
	_, err := e.c.CreatePorts(e.ctx, e.specs(5, "n"))
	if err == nil {
		t.Fatal("CreatePorts succeeded although the answer was lost")
	}
	if n := tg.fake.PortCount(); n != before {
		t.Errorf("%d ports after the lost answer, want %d: the batch was left behind", n, before)
	}
	if n := e.c.Stats()["ports.bulk_create"].Count; n != 1 {
		t.Errorf("bulk create sent %d times, want once (never blindly repeated)", n)
	}
}

func TestTagsWithoutBulkTagExtension(t *testing.T) {
	tg := fakeTarget(t)
	tg.fake.SetExtension("tag-ports-during-bulk-creation", false)
	e := newEnv(t, tg)
	ps, err := e.c.CreatePorts(e.ctx, e.specs(3, "n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if !p.HasTags(e.clusterTag(), neutron.NodeTag("n")) {
			t.Errorf("port %s tags %v", p.ID, p.Tags)
		}
	}
	if n := e.c.Stats()["ports.set_tags"].Count; n != 3 {
		t.Errorf("%d tag requests, want one per port (3)", n)
	}
	if n := len(e.tagged(neutron.NodeTag("n"))); n != 3 {
		t.Errorf("tag filter finds %d ports, want 3", n)
	}
	// Tagging fails half way: every port of the batch is deleted.
	before := tg.fake.PortCount()
	tg.fake.FailNext("PUT", "/v2.0/ports/", 500, 1)
	if _, err := e.c.CreatePorts(e.ctx, e.specs(3, "m")); err == nil {
		t.Fatal("CreatePorts succeeded although tagging failed")
	}
	if n := tg.fake.PortCount(); n != before {
		t.Errorf("%d ports, want %d: untagged ports were left behind", n, before)
	}
}

// inflight wraps the stand-in to count concurrent requests, each held for a moment.
type inflight struct {
	next      http.Handler
	cur, peak atomic.Int32
}

func (h *inflight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.cur.Add(1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	h.next.ServeHTTP(w, r)
	h.cur.Add(-1)
}

func TestConcurrencyBoundAndLimiter(t *testing.T) {
	s := fakeneutron.New()
	h := &inflight{next: s}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	fx, err := s.Fixture("p")
	if err != nil {
		t.Fatal(err)
	}
	fx.Endpoint = srv.URL + "/"
	e := newEnv(t, target{name: "fake", fx: fx, fake: s})
	ps := e.create(e.specs(10, "n"))

	c := e.newClient(neutron.ClientOptions{MaxConcurrentRequests: 2, QPS: 50, Burst: 1})
	h.peak.Store(0)
	if failed := c.DeletePorts(e.ctx, portIDs(ps)); len(failed) != 0 {
		t.Fatal(failed)
	}
	if p := h.peak.Load(); p != 2 {
		t.Errorf("peak of %d requests in flight, want 2 (MaxConcurrentRequests)", p)
	}
	st := c.Stats()["ports.delete"]
	if st.Count != 10 || st.LimiterWait <= 0 {
		t.Errorf("deletes: %+v; want 10 requests that waited for the limiter or a slot", st)
	}
}

func TestPrometheusCollectors(t *testing.T) {
	e := newEnv(t, fakeTarget(t))
	reg := prometheus.NewRegistry()
	for _, c := range e.c.Collectors() {
		reg.MustRegister(c)
	}
	if _, err := e.c.GetPort(e.ctx, "00000000-0000-4000-8000-000000000000"); err == nil {
		t.Fatal("GetPort of an unknown port succeeded")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "kuryr_neutron_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == "ports.get" && labels["code"] == "404" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Error("no kuryr_neutron_requests_total{operation=ports.get,code=404} = 1")
	}
	if s := e.c.Stats().String(); !strings.Contains(s, "ports.get") || !strings.Contains(s, "total") {
		t.Errorf("Stats table:\n%s", s)
	}
}

func TestConcurrentAttachOnOneTrunk(t *testing.T) {
	e := newEnv(t, fakeTarget(t))
	v := e.newVM()
	const workers, each = 5, 8
	// Leave only 45 VLAN IDs free, so that batches chosen without regard to each other collide.
	filler := e.create(e.specs(neutron.MaxVLAN-45, "filler"))
	subs := make([]neutron.Subport, len(filler))
	for i, p := range filler {
		subs[i] = neutron.Subport{PortID: p.ID, SegmentationID: i + 1}
	}
	if _, err := e.plain.AddSubports(e.ctx, v.trunk.ID, subs); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		ps := e.create(e.specs(each, "n"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.c.AttachPorts(e.ctx, v.trunk.ID, portIDs(ps), 1)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("AttachPorts: %v", err)
		}
	}
	if n := len(e.trunkSubports(v.trunk.ID)); n != len(filler)+workers*each {
		t.Fatalf("trunk has %d subports, want %d", n, len(filler)+workers*each)
	}
	// The process's own reservations keep concurrent batches apart: no clash at all.
	if n := e.c.Stats()["trunks.add_subports"]; n.Errors != 0 {
		t.Errorf("%d add_subports clashes between batches of one process", n.Errors)
	}
}

func TestNestedListWithSubportOwnerRewrite(t *testing.T) {
	tg := fakeTarget(t)
	tg.fake.RewriteSubportOwner = true
	e := newEnv(t, tg)
	v := e.newVM()
	b := e.nested(v, "node-a")
	ps, err := b.CreatePorts(e.ctx, pool.CreateRequest{Key: e.key(v.ip), SubnetIDs: []string{e.fx.PodSubnet}, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range e.tagged() {
		if p.DeviceOwner != pool.DeviceOwnerSubport {
			t.Errorf("port %s device_owner %q, want the rewrite to %s", p.ID, p.DeviceOwner, pool.DeviceOwnerSubport)
		}
	}
	listed, err := b.ListPorts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 {
		t.Errorf("listed %d, want 3", len(listed))
	}
	if failed := b.DeletePorts(e.ctx, ps); len(failed) != 0 {
		t.Error(failed)
	}
}

func TestBackendOptions(t *testing.T) {
	e := newEnv(t, fakeTarget(t))
	nested := []struct {
		name string
		o    neutron.NestedOptions
		want string
	}{
		{"no node IP", neutron.NestedOptions{WorkerSubnets: []string{"s"}}, "node IP"},
		{"no worker subnets", neutron.NestedOptions{NodeIP: "192.168.0.11"}, "worker_nodes_subnets"},
		{"comma in a tag", neutron.NestedOptions{NodeIP: "1.2.3.4", WorkerSubnets: []string{"s"}, ResourceTags: []string{"a,b"}}, `"a,b"`},
	}
	for _, tc := range nested {
		t.Run("nested "+tc.name, func(t *testing.T) {
			if _, err := neutron.NewNestedBackend(e.c, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	if _, err := neutron.NewBareMetalBackend(e.c, neutron.BareMetalOptions{}); err == nil || !strings.Contains(err.Error(), "node name") {
		t.Errorf("bare metal without a node name: %v", err)
	}
	// The node IP must be on a worker subnet and its port must have a trunk.
	b, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: e.fx.Trunks[0].IP, WorkerSubnets: []string{e.fx.PodSubnet}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListPorts(e.ctx); err == nil || !strings.Contains(err.Error(), "no port holds node IP") {
		t.Errorf("ListPorts with the node IP on no worker subnet: %v", err)
	}
	ok, err := neutron.NewNestedBackend(e.c, neutron.NestedOptions{NodeIP: e.fx.Trunks[0].IP, WorkerSubnets: []string{e.fx.WorkerSubnet}})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := ok.TrunkID(e.ctx); err != nil || id != e.fx.Trunks[0].Trunk {
		t.Errorf("TrunkID = %q, %v; want %s", id, err, e.fx.Trunks[0].Trunk)
	}
	if ok.Node() != e.fx.Trunks[0].IP {
		t.Errorf("Node() = %q", ok.Node())
	}
}

// stallFirst holds the first request matching method until release is closed.
type stallFirst struct {
	next    http.Handler
	method  string
	once    sync.Once
	release chan struct{}
}

func (h *stallFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == h.method {
		stalled := false
		h.once.Do(func() { stalled = true })
		if stalled {
			select {
			case <-h.release:
			case <-r.Context().Done():
			}
			return
		}
	}
	h.next.ServeHTTP(w, r)
}

func TestAttemptTimeout(t *testing.T) {
	s := fakeneutron.New()
	h := &stallFirst{next: s, method: http.MethodGet, release: make(chan struct{})}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(h.release) })
	fx, err := s.Fixture("p")
	if err != nil {
		t.Fatal(err)
	}
	fx.Endpoint = srv.URL + "/"
	e := newEnv(t, target{name: "fake", fx: fx, fake: s})
	c := e.newClient(neutron.ClientOptions{Timeout: 200 * time.Millisecond})
	// The first GET hangs: the attempt times out and, a read being safe, is repeated.
	if _, err := c.Subnet(e.ctx, fx.PodSubnet); err != nil {
		t.Fatalf("Subnet after a stalled attempt: %v", err)
	}
	if st := c.Stats()["subnets.get"]; st.Count != 2 || st.Errors != 1 {
		t.Errorf("subnets.get %+v, want 2 requests, 1 failed", st)
	}
}

func TestSubnetCacheTTL(t *testing.T) {
	e := newEnv(t, fakeTarget(t))
	c := e.newClient(neutron.ClientOptions{SubnetCacheTTL: time.Minute})
	now := time.Unix(1e9, 0)
	neutron.SetNow(c, func() time.Time { return now })
	get := func() {
		t.Helper()
		if _, err := c.SubnetDetails(e.ctx, e.fx.PodSubnet); err != nil {
			t.Fatal(err)
		}
	}
	get()
	now = now.Add(59 * time.Second)
	get()
	if n := c.Stats().Requests(); n != 2 {
		t.Errorf("%d requests within the TTL, want 2 (subnet + network once)", n)
	}
	now = now.Add(2 * time.Second)
	get()
	if n := c.Stats().Requests(); n != 4 {
		t.Errorf("%d requests after the TTL, want 4 (both read again)", n)
	}
}

// lateCommit holds POST /v2.0/ports until release is closed and then serves it: Neutron still
// creating a batch its client has given up on.
type lateCommit struct {
	next    http.Handler
	release chan struct{}
	served  chan struct{}
}

func (h *lateCommit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v2.0/ports" {
		<-h.release
		h.next.ServeHTTP(httptest.NewRecorder(), r.WithContext(context.WithoutCancel(r.Context())))
		close(h.served)
		return
	}
	h.next.ServeHTTP(w, r)
}

func TestLostBulkCreateSweptAgain(t *testing.T) {
	s := fakeneutron.New()
	h := &lateCommit{next: s, release: make(chan struct{}), served: make(chan struct{})}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	fx, err := s.Fixture("p")
	if err != nil {
		t.Fatal(err)
	}
	fx.Endpoint = srv.URL + "/"
	e := newEnv(t, target{name: "fake", fx: fx, fake: s})
	c := e.newClient(neutron.ClientOptions{Timeout: 100 * time.Millisecond})
	neutron.SetSweepDelay(c, 300*time.Millisecond)
	before := s.PortCount()
	if _, err := c.CreatePorts(e.ctx, e.specs(5, "n")); err == nil {
		t.Fatal("CreatePorts succeeded although its request timed out")
	}
	close(h.release) // the server now creates the batch, after the client's first sweep
	<-h.served
	if n := s.PortCount(); n != before+5 {
		t.Fatalf("%d ports, want %d: the late batch was not created", n, before+5)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.PortCount() != before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.PortCount(); n != before {
		t.Errorf("%d ports remain, want %d: the second sweep did not delete the late batch", n, before)
	}
}
