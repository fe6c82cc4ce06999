package cni

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadNetConf(t *testing.T) {
	for _, tc := range []struct {
		name, conf, wantErr string
		wantSocket          string
	}{
		{name: "defaults", conf: `{"cniVersion":"1.0.0","name":"kuryr","type":"kuryr-cni"}`, wantSocket: DefaultSocketPath},
		{name: "socket override", conf: `{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","socketPath":"/tmp/x.sock"}`, wantSocket: "/tmp/x.sock"},
		{name: "malformed JSON", conf: `{"cniVersion":`, wantErr: "invalid kuryr-cni network configuration"},
		{name: "wrong type", conf: `{"type":"bridge"}`, wantErr: `type is "bridge"`},
		{name: "relative socket", conf: `{"type":"kuryr-cni","socketPath":"run/x.sock"}`, wantErr: "not an absolute path"},
		{name: "negative timeout", conf: `{"type":"kuryr-cni","timeoutSeconds":-1}`, wantErr: "timeoutSeconds -1"},
		{name: "bad log level", conf: `{"type":"kuryr-cni","logLevel":"loud"}`, wantErr: `logLevel "loud"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := LoadNetConf([]byte(tc.conf))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadNetConf error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadNetConf: %v", err)
			}
			if conf.SocketPath != tc.wantSocket {
				t.Errorf("SocketPath = %q, want %q", conf.SocketPath, tc.wantSocket)
			}
			if conf.Timeout() != DefaultTimeout {
				t.Errorf("Timeout = %v, want %v", conf.Timeout(), DefaultTimeout)
			}
		})
	}
}

func TestParseK8sArgs(t *testing.T) {
	pod, err := ParseK8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if want := (PodRef{Namespace: "demo", Name: "p1", UID: "u-1"}); pod != want {
		t.Errorf("pod = %+v, want %+v", pod, want)
	}
	if _, err := ParseK8sArgs("K8S_POD_NAME"); err == nil {
		t.Error("ParseK8sArgs accepted an argument without '='")
	}
}

// fakeAgent serves the agent protocol on a real unix socket.
func fakeAgent(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(l) //nolint:errcheck // closed below
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestClientCall(t *testing.T) {
	var got Request
	sock := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decode: %v", err)
		}
		switch r.URL.Path {
		case PathAdd:
			io.WriteString(w, `{"cniVersion":"1.1.0"}`)
		case PathCheck:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"code":11,"msg":"pool empty","details":"refill in flight"}`)
		default:
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "boom")
		}
	})
	c := NewClient(sock)
	ctx := context.Background()
	body, err := c.Call(ctx, PathAdd, &Request{ContainerID: "c1", IfName: "eth0", Config: json.RawMessage(`{}`)})
	if err != nil || string(body) != `{"cniVersion":"1.1.0"}` {
		t.Fatalf("ADD = %q, %v", body, err)
	}
	if got.ContainerID != "c1" || got.IfName != "eth0" {
		t.Errorf("agent got %+v", got)
	}
	_, err = c.Call(ctx, PathCheck, &Request{Config: json.RawMessage(`{}`)})
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || cniErr.Msg != "pool empty" {
		t.Errorf("CHECK error = %#v, want code 11 'pool empty'", err)
	}
	_, err = c.Call(ctx, PathGC, &Request{Config: json.RawMessage(`{}`)})
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInternal || !strings.Contains(cniErr.Msg, "500") {
		t.Errorf("GC error = %#v, want an internal error naming the 500", err)
	}
	_, err = NewClient(filepath.Join(t.TempDir(), "missing.sock")).Call(ctx, PathStatus, nil)
	if !errors.Is(err, ErrAgentUnavailable) {
		t.Errorf("missing socket: error = %v, want ErrAgentUnavailable", err)
	}
}

type fakeCaller struct {
	body  []byte
	err   error
	paths []string
}

func (f *fakeCaller) Call(_ context.Context, path string, _ *Request) ([]byte, error) {
	f.paths = append(f.paths, path)
	return f.body, f.err
}

func captureStdout(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	ferr := fn()
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out), ferr
}

func TestAddPrintsResultInConfigVersion(t *testing.T) {
	result := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"fa:16:3e:00:00:01","sandbox":"/var/run/netns/x"}],
		"ips":[{"interface":0,"address":"10.0.0.5/24","gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]}`
	for _, version := range []string{"1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			f := &fakeCaller{body: []byte(result)}
			p := &Plugin{Dial: func(string) Caller { return f }}
			args := &skel.CmdArgs{ContainerID: "c1", Netns: "/var/run/netns/x", IfName: "eth0",
				StdinData: []byte(`{"cniVersion":"` + version + `","name":"kuryr","type":"kuryr-cni"}`)}
			out, err := captureStdout(t, func() error { return p.Add(args) })
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			var printed map[string]any
			if err := json.Unmarshal([]byte(out), &printed); err != nil {
				t.Fatalf("stdout is not JSON: %q", out)
			}
			if printed["cniVersion"] != version {
				t.Errorf("printed cniVersion %v, want %s", printed["cniVersion"], version)
			}
			if ips := printed["ips"].([]any); ips[0].(map[string]any)["address"] != "10.0.0.5/24" {
				t.Errorf("printed ips %v", ips)
			}
		})
	}
}

func TestErrorsKeepAgentCodes(t *testing.T) {
	stdin := []byte(`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni"}`)
	for _, tc := range []struct {
		name     string
		agentErr error
		call     func(p *Plugin, a *skel.CmdArgs) error
		wantCode uint
	}{
		{"ADD pool empty", types.NewError(types.ErrTryAgainLater, "pool empty", ""), (*Plugin).Add, types.ErrTryAgainLater},
		{"ADD agent down", ErrAgentUnavailable, (*Plugin).Add, types.ErrPluginNotAvailable},
		{"STATUS agent down", ErrAgentUnavailable, (*Plugin).Status, types.ErrPluginNotAvailable},
		{"CHECK timeout", context.DeadlineExceeded, (*Plugin).Check, types.ErrTryAgainLater},
		{"GC other", errors.New("broken pipe"), (*Plugin).GC, types.ErrInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plugin{Dial: func(string) Caller { return &fakeCaller{err: tc.agentErr} }}
			err := tc.call(p, &skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: stdin})
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != tc.wantCode {
				t.Fatalf("error = %#v, want CNI code %d", err, tc.wantCode)
			}
		})
	}
	p := &Plugin{Dial: func(string) Caller { return &fakeCaller{} }}
	err := p.Add(&skel.CmdArgs{StdinData: []byte(`not json`)})
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrDecodingFailure {
		t.Errorf("malformed config: error = %#v, want code %d", err, types.ErrDecodingFailure)
	}
}

func TestDelWhenAgentDownTearsDownLocally(t *testing.T) {
	stdin := []byte(`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni"}`)
	var torn []string
	teardown := func(_ context.Context, netns, ifname string) error {
		torn = append(torn, netns+"/"+ifname)
		return nil
	}
	p := &Plugin{Dial: func(string) Caller { return &fakeCaller{err: ErrAgentUnavailable} }, LocalTeardown: teardown}
	if err := p.Del(&skel.CmdArgs{ContainerID: "c", Netns: "/var/run/netns/p", IfName: "eth0", StdinData: stdin}); err != nil {
		t.Fatalf("Del with agent down: %v", err)
	}
	if len(torn) != 1 || torn[0] != "/var/run/netns/p/eth0" {
		t.Errorf("local teardown calls = %v", torn)
	}
	// Without a netns there is nothing to tear down, and DEL still succeeds.
	if err := p.Del(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: stdin}); err != nil {
		t.Fatalf("Del without netns: %v", err)
	}
	// A failing local teardown is reported, so the runtime retries the DEL.
	p.LocalTeardown = func(context.Context, string, string) error { return errors.New("netns busy") }
	if err := p.Del(&skel.CmdArgs{ContainerID: "c", Netns: "/x", IfName: "eth0", StdinData: stdin}); err == nil {
		t.Error("Del hid a failed local teardown")
	}
	// When the agent answers, its error is returned as it is.
	p = &Plugin{Dial: func(string) Caller { return &fakeCaller{err: types.NewError(types.ErrInternal, "x", "")} }}
	if err := p.Del(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: stdin}); err == nil {
		t.Error("Del hid the agent's error")
	}
}
