package neutron

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/klog/v2"
)

// transport is the one narrow place every HTTP request to Neutron (and Keystone) goes through:
// token bucket, concurrency bound, per-operation metrics and the retry policy. Putting it under
// gophercloud, not around our calls, means every page of a paginated list and every retry is
// limited and counted as the request it is.
type transport struct {
	next       http.RoundTripper
	limiter    *rate.Limiter // nil: unlimited
	sem        chan struct{} // nil: unbounded
	metrics    *metrics
	maxRetries int
	timeout    time.Duration // of one attempt, from when it is sent; 0: none
	// backoff returns the wait before retry n (1-based); tests shorten it.
	backoff       func(n int) time.Duration
	retryAfterCap time.Duration
}

type opKey struct{}

// withOp names the operation of the requests made with ctx, for metrics and logs.
func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// opOf is the operation named by withOp, else "<METHOD> <first path element after v2.0>".
func opOf(req *http.Request) string {
	if op, ok := req.Context().Value(opKey{}).(string); ok {
		return op
	}
	p := req.URL.Path
	if i := strings.Index(p, "/v2.0/"); i >= 0 {
		p = p[i+len("/v2.0/"):]
	} else if strings.Contains(p, "/v3/") || strings.HasSuffix(p, "/v3") {
		return "keystone"
	}
	p = strings.Trim(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p = p[:i]
	}
	return strings.ToLower(req.Method) + " " + p
}

func defaultBackoff(n int) time.Duration {
	d := 200 * time.Millisecond << min(n-1, 5) // 0.2 s .. 6.4 s
	return d/2 + rand.N(d/2+1)                 // jitter: concurrent retries do not align
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	op := opOf(req)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, errors.New("neutron: cannot retry a request whose body cannot be replayed")
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(ctx)
			req.Body = body
		}
		resp, err := t.once(ctx, op, req)
		wait, retry := t.shouldRetry(ctx, req.Method, attempt, resp, err)
		if !retry {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		klog.FromContext(ctx).V(4).Info("Retrying Neutron request", "op", op, "attempt", attempt+1,
			"wait", wait, "status", statusOf(resp), "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// once sends one HTTP request through the limiter and the concurrency bound and records it.
// The semaphore slot and the latency run until the response body is closed: reading a big list
// is part of the request.
func (t *transport) once(ctx context.Context, op string, req *http.Request) (*http.Response, error) {
	waitStart := time.Now()
	if t.limiter != nil {
		if err := t.limiter.Wait(ctx); err != nil {
			return nil, err
		}
	}
	if t.sem != nil {
		select {
		case t.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	start := time.Now()
	t.metrics.waited(op, start.Sub(waitStart))
	cancel := context.CancelFunc(func() {})
	if t.timeout > 0 {
		var actx context.Context
		actx, cancel = context.WithTimeout(ctx, t.timeout)
		req = req.WithContext(actx)
	}
	release := func() {
		cancel()
		if t.sem != nil {
			<-t.sem
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		release()
		t.metrics.observe(op, 0, time.Since(start))
		return nil, err
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() {
		release()
		t.metrics.observe(op, resp.StatusCode, time.Since(start))
	}}
	return resp, nil
}

// shouldRetry is the retry policy: only where repeating the request cannot do harm.
//   - Any method: 429 or 503 carrying Retry-After (the server refused the request unprocessed).
//   - GET/HEAD (reads) and DELETE (the caller counts 404 as done): transport errors, 429,
//     502, 503, 504.
//   - Never a POST or PUT otherwise: a create or update that may have happened is not repeated.
func (t *transport) shouldRetry(ctx context.Context, method string, attempt int, resp *http.Response, err error) (time.Duration, bool) {
	if attempt >= t.maxRetries || ctx.Err() != nil {
		return 0, false
	}
	if err != nil { // includes an attempt that ran out of its own timeout
		return t.backoff(attempt + 1), idempotent(method)
	}
	code := resp.StatusCode
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return min(d, t.retryAfterCap), true
		}
	}
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return t.backoff(attempt + 1), idempotent(method)
	}
	return 0, false
}

func idempotent(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(time.Until(at), 0), true
	}
	return 0, false
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// doneBody calls done once, at Close or at the end of the body, whichever comes first.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
