package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
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

// RestConfig is the API server configuration: a kubeconfig file when given, else kuryr's
// [kubernetes] api_root with token_file and ssl_ca_crt_file, else the in-cluster configuration.
func RestConfig(kubeconfig, apiRoot, tokenFile, caFile, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case apiRoot != "":
		cfg = &rest.Config{Host: apiRoot, BearerTokenFile: tokenFile}
		cfg.CAFile = caFile
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = userAgent
	// The API server warns on every create that kuryr's finalizer name has no "/": once is enough.
	cfg.WarningHandler = rest.NewWarningWriter(os.Stderr, rest.WarningWriterOptions{Deduplicate: true})
	cfg.QPS, cfg.Burst = 20, 40
	return cfg, nil
}
