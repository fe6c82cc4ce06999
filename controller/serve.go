package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/tools/leaderelection"
)

// Health serves kuryr's controller probes: /alive fails when this replica leads but missed its
// Lease renewals; /ready succeeds on a standby replica and, on the leader, once the caches have
// synced and the workers run.
type Health struct {
	Leader  *leaderelection.HealthzAdaptor
	Leading func() bool
	Ready   func() bool
}

// Handler is the probe mux.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	alive := func(w http.ResponseWriter, r *http.Request) {
		if h.Leader != nil {
			if err := h.Leader.Check(r); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		_, _ = fmt.Fprintln(w, "ok")
	}
	ready := func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case h.Leading != nil && !h.Leading():
			_, _ = fmt.Fprintln(w, "standby")
		case h.Ready != nil && !h.Ready():
			http.Error(w, "informer caches not synced yet", http.StatusServiceUnavailable)
		default:
			_, _ = fmt.Fprintln(w, "ok")
		}
	}
	mux.HandleFunc("GET /alive", alive)
	mux.HandleFunc("GET /healthz", alive)
	mux.HandleFunc("GET /ready", ready)
	mux.HandleFunc("GET /readyz", ready)
	return mux
}

// Serve serves h on addr until ctx is done.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}
