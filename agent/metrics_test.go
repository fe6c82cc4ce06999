package agent

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The profiles are served only when [cni_daemon] pprof asks for them; the metrics always are.
func TestMetricsHandlerPprof(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "kuryr_metric 1\n") })
	for _, tc := range []struct {
		pprof      bool
		path       string
		wantStatus int
		wantBody   string
	}{
		{false, "/metrics", 200, "kuryr_metric 1"},
		{false, "/debug/pprof/", 200, "kuryr_metric 1"}, // off: the metrics handler answers every path, as before
		{true, "/metrics", 200, "kuryr_metric 1"},
		{true, "/debug/pprof/", 200, "goroutine"},
		{true, "/debug/pprof/heap?debug=1", 200, "heap profile"},
		{true, "/debug/pprof/mutex?debug=1", 200, "mutex"},
	} {
		srv := httptest.NewServer(metricsHandler(metrics, tc.pprof))
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
			t.Errorf("pprof=%v GET %s: %d %.80q, want %d with %q", tc.pprof, tc.path, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
		}
		if !tc.pprof && strings.Contains(string(body), "goroutine") {
			t.Errorf("pprof off, GET %s served a profile", tc.path)
		}
	}
}
