package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

func TestDistRow(t *testing.T) {
	var vs []float64
	for i := 100; i >= 1; i-- {
		vs = append(vs, float64(i))
	}
	r := distRow("x", "s", "op", "ms", vs)
	if r.N != 100 || r.P50 != 51 || r.P99 != 99 || r.Max != 100 {
		t.Errorf("distRow of 1..100 = n %d p50 %g p99 %g max %g", r.N, r.P50, r.P99, r.Max)
	}
	if r := distRow("x", "s", "op", "ms", nil); r.N != 0 || r.Max != 0 {
		t.Errorf("empty distRow = %+v", r)
	}
	if vs[0] != 100 {
		t.Error("distRow sorted its input in place")
	}
}

func TestJudge(t *testing.T) {
	lat := func(label, scenario string, p50, p99 float64) Row {
		return Row{Label: label, Scenario: scenario, Op: "ADD", Unit: "ms", N: 10, P50: p50, P99: p99, Max: p99}
	}
	rows := []Row{
		lat("kuryr-pool", "sequential-200", 12, 30), lat("bridge", "sequential-200", 10, 20), lat("kuryr-noop", "sequential-20", 300, 400),
		lat("kuryr-pool", "burst-50", 14, 50), lat("bridge", "burst-50", 10, 20), lat("kuryr-noop", "burst-50", 200, 900),
		lat("kuryr-pool", "burst-100", 10, 20), lat("kuryr-noop", "burst-10", 900, 900), // other size: not judged
		valueRow("kuryr-agent", "1000-ports-200-pods", "VmRSS", "MiB", 48, ""), // 50.3 MB
		valueRow("kuryr-agent", "1000-ports-0-pods", "VmRSS", "MiB", 60, ""),   // not a target row
		valueRow("kuryr-agent", "add-path", "neutron requests/ADD", "requests", 0, ""),
		valueRow("kuryr-agent", "nested-refill", "requests/batch", "requests", 2, ""),
		distRow("kuryr-agent", "startup-100-ports", "ready - neutron", "ms", []float64{100, 200, 300}),
		distRow("kuryr-agent", "startup-1000-ports", "ready - neutron", "ms", []float64{100, 200, 1300}),
		distRow("kuryr-agent", "startup-100-ports", "neutron requests", "requests", []float64{3, 3, 3}),
		distRow("kuryr-agent", "startup-1000-ports", "neutron requests", "requests", []float64{5, 5, 5}),
	}
	met := map[string]bool{}
	for _, tg := range judge(rows) {
		met[tg.Goal] = tg.Met
	}
	want := map[string]bool{
		"ADD p50 within 1.3x of bridge, sequential-200":           true,  // 1.2x
		"ADD p99 within 2x of bridge, sequential-200":             true,  // 1.5x
		"ADD p50 within 1.3x of bridge, burst-50":                 false, // 1.4x
		"ADD p99 within 2x of bridge, burst-50":                   false, // 2.5x
		"ADD at least 20x faster than noop, sequential-200":       true,  // 25x
		"ADD at least 20x faster than noop, burst-50":             false, // 14.3x
		"agent RSS < 50 MB, 1000-ports-200-pods":                  false, // 48 MiB is 50.3 MB
		"no Neutron request on the ADD path":                      true,
		"2 Neutron requests per nested refill batch":              true,
		"start-up within 1 s of Neutron's time, 100-ports":        true,
		"start-up within 1 s of Neutron's time, 1000-ports":       false, // max 1300
		"start-up Neutron requests independent of the port count": false, // 3 then 5
	}
	if len(met) != len(want) {
		t.Errorf("judged %d targets, want %d: %v", len(met), len(want), met)
	}
	for goal, w := range want {
		if got, ok := met[goal]; !ok || got != w {
			t.Errorf("%s: met=%v (judged: %v), want %v", goal, got, ok, w)
		}
	}
}

func TestNoopFor(t *testing.T) {
	lat := func(label, scenario string) Row { return Row{Label: label, Scenario: scenario, Op: "ADD", Unit: "ms"} }
	rows := []Row{lat("kuryr-noop", "burst-10"), lat("kuryr-noop", "burst-50"), lat("kuryr-noop", "sequential-20")}
	for _, tc := range []struct{ scenario, want string }{
		{"burst-50", "burst-50"}, {"burst-100", "burst-10"}, {"sequential-200", "sequential-20"}, {"startup-1", ""},
	} {
		got := ""
		if n := noopFor(rows, lat("kuryr-pool", tc.scenario)); n != nil {
			got = n.Scenario
		}
		if got != tc.want {
			t.Errorf("noopFor(%s) = %q, want %q", tc.scenario, got, tc.want)
		}
	}
}

func TestReportWritesJSONAndPlot(t *testing.T) {
	dir := t.TempDir()
	rowsPath := filepath.Join(dir, "rows.jsonl")
	f, err := os.Create(rowsPath)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	rows := []Row{
		latencyRow("kuryr-pool", "sequential-3", "ADD", []time.Duration{10 * time.Millisecond, 12 * time.Millisecond, 30 * time.Millisecond}, 0, 0),
		latencyRow("bridge", "sequential-3", "ADD", []time.Duration{20 * time.Millisecond, 22 * time.Millisecond, 40 * time.Millisecond}, 0, 0),
		valueRow("kuryr-agent", "x", "VmRSS", "MiB", 20, "note & <escaped>"),
	}
	old := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull) // appendRows prints each row
	appendRows(rowsPath, rows...)
	os.Stdout = old
	var out strings.Builder
	jsonPath, svgPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	if err := report(rowsPath, jsonPath, svgPath, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0.55x") {
		t.Errorf("table lacks the pool/bridge p50 ratio 0.55x:\n%s", out.String())
	}
	data, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	var svg struct {
		XMLName xml.Name
		Rects   []struct{} `xml:"rect"`
	}
	if err := xml.Unmarshal(data, &svg); err != nil {
		t.Fatalf("plot is not well-formed XML: %v", err)
	}
	// The background, and a p99 and a p50 bar per millisecond distribution (not the MiB row).
	if svg.XMLName.Local != "svg" || len(svg.Rects) != 1+2*2 {
		t.Errorf("plot: <%s> with %d rects, want <svg> with 5", svg.XMLName.Local, len(svg.Rects))
	}
	js, err := os.ReadFile(jsonPath)
	if err != nil || !strings.Contains(string(js), `"p50": 12`) || !strings.Contains(string(js), `"cpus"`) {
		t.Errorf("results JSON (%v):\n%s", err, js)
	}
}

// The proxy holds requests until released, and they then reach Neutron.
func TestHoldProxy(t *testing.T) {
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	p, err := newHoldProxy(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	get := func() error {
		resp, err := http.Get(p.url + "v2.0/ports")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil || hits.Load() != 1 {
		t.Fatalf("not held: err %v, backend hits %d", err, hits.Load())
	}
	p.hold()
	done := make(chan error)
	go func() { done <- get() }()
	for p.heldReqs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("a held request returned (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	if hits.Load() != 1 {
		t.Fatalf("a held request reached the backend")
	}
	p.release()
	if err := <-done; err != nil || hits.Load() != 2 {
		t.Errorf("after release: err %v, backend hits %d", err, hits.Load())
	}
}

func TestRusageExecRecordsTheChild(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(ok, []byte("#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\"}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho '{\"code\":11,\"msg\":\"try later\"}'\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &rusageExec{}
	out, err := e.ExecPlugin(context.Background(), ok, nil, []string{"CNI_COMMAND=ADD"})
	if err != nil || !strings.Contains(string(out), "1.1.0") {
		t.Fatalf("ExecPlugin = %q, %v", out, err)
	}
	if _, err := e.ExecPlugin(context.Background(), bad, nil, []string{"CNI_COMMAND=DEL"}); err == nil || !strings.Contains(err.Error(), "try later") {
		t.Errorf("failing plugin: %v, want its CNI error", err)
	}
	adds, dels := e.take("ADD"), e.take("DEL")
	if len(adds) != 1 || len(dels) != 1 || len(e.take("ADD")) != 0 {
		t.Fatalf("recorded %d ADD and %d DEL, want 1 each, once", len(adds), len(dels))
	}
	if u := adds[0]; u.MaxRSSKiB <= 0 || u.Wall <= 0 || u.PluginPath != ok {
		t.Errorf("usage %+v", u)
	}
}

// The plugin's peak memory is its own, not this process's: Go starts children with vfork, and the
// kernel then counts the parent's high-water mark in the child's ru_maxrss.
func TestRusageExecPeakIsThePlugins(t *testing.T) {
	_, err := os.Stat(gnuTime)
	testutil.Require(t, err == nil, "GNU time at "+gnuTime+" (apt-get install time)")
	plugin := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\"}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ballast := make([]byte, 200<<20)
	for i := range ballast {
		ballast[i] = 1 // resident, not just reserved
	}
	peak := func(timeBin string) int64 {
		e := &rusageExec{timeBin: timeBin}
		if _, err := e.ExecPlugin(context.Background(), plugin, nil, []string{"CNI_COMMAND=ADD"}); err != nil {
			t.Fatal(err)
		}
		return e.take("ADD")[0].MaxRSSKiB
	}
	inherited, own := peak(""), peak(gnuTime)
	if inherited < 200<<10 {
		t.Logf("this kernel does not count the parent's memory in a vforked child (%d KiB)", inherited)
	}
	if own <= 0 || own > 50<<10 {
		t.Errorf("peak through GNU time %d KiB, want the shell's own few MiB (the test process holds 200 MiB)", own)
	}
	runtime.KeepAlive(ballast)
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP kuryr_neutron_requests_total x
kuryr_neutron_requests_total{code="201",operation="ports.bulk_create"} 2
kuryr_neutron_requests_total{code="409",operation="trunks.add_subports"} 1
kuryr_neutron_requests_total{code="200",operation="trunks.add_subports"} 2
kuryr_neutron_request_duration_seconds_sum{operation="ports.bulk_create"} 1.5
kuryr_pool_ports{network="n",node="a",project="p",state="free"} 7
kuryr_pool_ports{network="m",node="a",project="p",state="free"} 3
kuryr_pool_ports{network="n",node="a",project="p",state="in_flight"} 10
kuryr_pool_operations_total{operation="ports_created"} 20
`)
	}))
	defer srv.Close()
	a := &agentProc{metrics: strings.TrimPrefix(srv.URL, "http://")}
	s, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if s.requests["trunks.add_subports"] != 3 || total(s.requests) != 5 || s.latency["ports.bulk_create"] != 1.5 ||
		s.free != 10 || s.inFlight != 10 || s.created != 20 {
		t.Errorf("scrape = %+v", s)
	}
	if got := opsString(sub(map[string]float64{"a": 3, "b": 1}, map[string]float64{"a": 1, "b": 1})); got != "a=2" {
		t.Errorf("sub/opsString = %q", got)
	}
}
