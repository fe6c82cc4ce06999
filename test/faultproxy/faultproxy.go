// Package faultproxy is a reverse proxy that injects faults between a client and a real HTTP
// server (neutron-server in the reliability suites): latency, error answers, connection resets,
// requests that hang, and answers lost after the server did the work.
package faultproxy

import (
	"cmp"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Kind is what a fault does to a request.
type Kind int

const (
	// Delay forwards the request after Delay.
	Delay Kind = iota
	// Status answers Status with a Neutron-style error body, without forwarding.
	Status
	// Reset closes the connection without an answer, without forwarding.
	Reset
	// Hang holds the request until the client gives up (or Delay passes), without forwarding.
	Hang
	// LoseAnswer forwards the request, lets the server do the work, then closes the connection:
	// the client cannot tell whether it happened.
	LoseAnswer
)

func (k Kind) String() string {
	return [...]string{"delay", "status", "reset", "hang", "lose-answer"}[k]
}

// Fault applies to the next Count requests whose method is Method ("" for any) and whose path
// starts with PathPrefix.
type Fault struct {
	Method, PathPrefix string
	Kind               Kind
	Status             int           // Status
	Delay              time.Duration // Delay; Hang's limit (0: until the client gives up, at most 2 minutes)
	Count              int
}

// Proxy forwards to a target and applies the queued faults in order.
type Proxy struct {
	URL string

	srv    *httptest.Server
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	faults []*Fault
	hits   map[Kind]int
	total  int
}

// New starts a proxy to target on a loopback port.
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("fault proxy target %q: %w", target, err)
	}
	p := &Proxy{rp: httputil.NewSingleHostReverseProxy(u), hits: map[Kind]int{}}
	// A client that gives up is the fault under test, not news.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL + strings.TrimSuffix(u.Path, "/") + "/"
	return p, nil
}

// Close stops the proxy, cutting the connections still open.
func (p *Proxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// Inject queues faults; each applies to its next Count matching requests.
func (p *Proxy) Inject(fs ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range fs {
		f := f
		p.faults = append(p.faults, &f)
	}
}

// Heal drops every queued fault.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Pending is how many injections are still to be applied.
func (p *Proxy) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.faults {
		n += f.Count
	}
	return n
}

// Injected reports how many faults of each kind were applied, and how many requests came.
func (p *Proxy) Injected() (map[Kind]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Kind]int, len(p.hits))
	for k, v := range p.hits {
		out[k] = v
	}
	return out, p.total
}

func (p *Proxy) take(r *http.Request) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total++
	for i, f := range p.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(r.URL.Path, f.PathPrefix) {
			f.Count--
			if f.Count <= 0 {
				p.faults = append(p.faults[:i], p.faults[i+1:]...)
			}
			p.hits[f.Kind]++
			c := *f
			return &c
		}
	}
	return nil
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f := p.take(r)
	if f == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	switch f.Kind {
	case Delay:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
		p.rp.ServeHTTP(w, r)
	case Status:
		if f.Status == http.StatusTooManyRequests || f.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"NeutronError": {"type": "InjectedFault", "message": "fault proxy: injected %d", "detail": ""}}`, f.Status)
	case Reset:
		resetConn(w)
	case Hang:
		// The server notices that the client went away only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		limit := time.After(cmp.Or(f.Delay, 2*time.Minute))
		select {
		case <-r.Context().Done():
		case <-limit:
			resetConn(w)
		}
	case LoseAnswer:
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		resetConn(w)
	}
}

// resetConn closes the client's connection with an RST (linger 0), so that it sees no answer.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: the server does not support hijacking")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
