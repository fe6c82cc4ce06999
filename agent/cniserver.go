package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/cni"
)

// maxRequestBytes bounds a CNI request body: a network configuration with a prevResult is a few KiB.
const maxRequestBytes = 1 << 20

// CNIHandler serves the agent side of the kuryr-cni protocol.
func CNIHandler(ctx context.Context, s *Service, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, fn func(context.Context, *cni.Request) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			req := &cni.Request{}
			if err := decodeOne(json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)), req); err != nil {
				writeCNIError(w, cniError(types.ErrDecodingFailure, "invalid request from kuryr-cni", err))
				return
			}
			// The request's own context is cancelled if kuryr-cni dies; the agent still finishes
			// (or rolls back) what it started, so detach from it but keep the logger.
			rctx := klog.NewContext(context.WithoutCancel(r.Context()), klog.FromContext(ctx))
			start := time.Now()
			out, err := fn(rctx, req)
			m.Observe(path[len("/v1/cni/"):], resultLabel(err), time.Since(start))
			if err != nil {
				writeCNIError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if out != nil {
				_ = json.NewEncoder(w).Encode(out)
			}
		})
	}
	handle(cni.PathAdd, func(ctx context.Context, r *cni.Request) (any, error) { return s.Add(ctx, r) })
	handle(cni.PathDel, func(ctx context.Context, r *cni.Request) (any, error) { return nil, s.Del(ctx, r) })
	handle(cni.PathCheck, func(ctx context.Context, r *cni.Request) (any, error) { return nil, s.Check(ctx, r) })
	handle(cni.PathGC, func(ctx context.Context, r *cni.Request) (any, error) { return nil, s.GC(ctx, r) })
	handle(cni.PathStatus, func(ctx context.Context, _ *cni.Request) (any, error) { return nil, s.Status(ctx) })
	mux.HandleFunc("GET "+cni.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		if err := s.Status(r.Context()); err != nil {
			writeCNIError(w, err)
		}
	})
	return mux
}

// resultLabel is "ok" or the CNI error code, for metrics.
func resultLabel(err error) string {
	if err == nil {
		return "ok"
	}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return fmt.Sprint(cniErr.Code)
	}
	return fmt.Sprint(types.ErrInternal)
}

func writeCNIError(w http.ResponseWriter, err error) {
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		cniErr = cniError(types.ErrInternal, "internal error", err)
	}
	status := http.StatusInternalServerError
	switch cniErr.Code {
	case types.ErrTryAgainLater, types.ErrPluginNotAvailable:
		status = http.StatusServiceUnavailable
	case types.ErrUnknownContainer:
		status = http.StatusNotFound
	case types.ErrIncompatibleCNIVersion, types.ErrUnsupportedField, types.ErrInvalidEnvironmentVariables,
		types.ErrDecodingFailure, types.ErrInvalidNetworkConfig, types.ErrInvalidNetNS:
		status = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(cniErr)
}

// ServeUnix serves h on a root-only unix socket until ctx is done.
func ServeUnix(ctx context.Context, path string, policy SocketPolicy, h http.Handler) error {
	l, err := ListenUnix(path, policy)
	if err != nil {
		return err
	}
	return serve(ctx, l, h, path)
}

func serve(ctx context.Context, l net.Listener, h http.Handler, name string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnContext: withPeerCred,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-done // Shutdown has drained the requests in progress
		return nil
	}
	return fmt.Errorf("serve %s: %w", name, err)
}

// decodeOne decodes exactly one JSON value: anything after it (a second object, stray bytes) is an
// error, not silently ignored.
func decodeOne(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}
