package faultproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	var served atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	defer backend.Close()
	p, err := New(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(method, path string) (int, string, error) {
		req, _ := http.NewRequestWithContext(context.Background(), method, p.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	tests := []struct {
		name       string
		fault      Fault
		wantStatus int
		wantErr    bool
		wantServed int32 // requests that reached the backend
	}{
		{name: "no fault", wantStatus: 200, wantServed: 1},
		{name: "status", fault: Fault{Method: "POST", PathPrefix: "v2.0/ports", Kind: Status, Status: 503, Count: 1}, wantStatus: 503},
		{name: "delay", fault: Fault{Method: "POST", PathPrefix: "v2.0/ports", Kind: Delay, Delay: 50 * time.Millisecond, Count: 1}, wantStatus: 200, wantServed: 1},
		{name: "reset", fault: Fault{Method: "POST", PathPrefix: "v2.0/ports", Kind: Reset, Count: 1}, wantErr: true},
		{name: "hang until the client gives up", fault: Fault{Method: "POST", PathPrefix: "v2.0/ports", Kind: Hang, Count: 1}, wantErr: true},
		{name: "lost answer: the work is done", fault: Fault{Method: "POST", PathPrefix: "v2.0/ports", Kind: LoseAnswer, Count: 1}, wantErr: true, wantServed: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			served.Store(0)
			if tc.fault.Count > 0 {
				tc.fault.PathPrefix = "/" + tc.fault.PathPrefix
				p.Inject(tc.fault)
			}
			code, body, err := get("POST", "v2.0/ports")
			if (err != nil) != tc.wantErr || !tc.wantErr && code != tc.wantStatus {
				t.Fatalf("POST: %d %q %v; want status %d, error %v", code, body, err, tc.wantStatus, tc.wantErr)
			}
			if got := served.Load(); got != tc.wantServed {
				t.Errorf("backend served %d requests, want %d", got, tc.wantServed)
			}
			if p.Pending() != 0 {
				t.Errorf("%d injections left", p.Pending())
			}
		})
	}
	// A fault matches only its method and path, and only Count times.
	p.Inject(Fault{Method: "DELETE", PathPrefix: "/v2.0/ports", Kind: Status, Status: 500, Count: 2})
	if code, _, err := get("GET", "v2.0/ports"); err != nil || code != 200 {
		t.Errorf("GET with a DELETE fault queued: %d %v", code, err)
	}
	for i, want := range []int{500, 500, 200} {
		if code, _, err := get("DELETE", "v2.0/ports/x"); err != nil || code != want {
			t.Errorf("DELETE %d: %d %v, want %d", i, code, err, want)
		}
	}
	kinds, total := p.Injected()
	if kinds[Status] != 3 || kinds[Reset] != 1 || kinds[LoseAnswer] != 1 || total < 10 {
		t.Errorf("Injected() = %v, %d", kinds, total)
	}
}
