package cni

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// netConfSeeds are network configurations kuryr-cni really gets on stdin: the daemonset's
// conflist entry as libcni hands it over (name and cniVersion injected), what containerd and
// CRI-O add (runtimeConfig, prevResult on CHECK, valid-attachments on GC), and known bad ones.
var netConfSeeds = []string{
	`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","socketPath":"/run/kuryr/cni.sock","timeoutSeconds":90,"logFile":"/var/log/kuryr-cni.log"}`,
	`{"cniVersion":"1.0.0","name":"kuryr","type":"kuryr-cni"}`,
	`{"cniVersion":"0.4.0","name":"kuryr","type":"kuryr-cni","logLevel":"debug","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}`,
	`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"fa:16:3e:00:00:01","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"10.0.0.5/24","gateway":"10.0.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]}}`,
	`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`,
	`{"cniVersion":"1.1.0","name":"kuryr","type":"kuryr-cni","ipam":{},"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}`,
	`{"cniVersion":"1.1.0","name":"kuryr","type":"bridge"}`,
	`{"type":"kuryr-cni","socketPath":"run/kuryr/cni.sock"}`,
	`{"type":"kuryr-cni","timeoutSeconds":-1}`,
	`{"type":"kuryr-cni","timeoutSeconds":1e3}`,
	`{"type":"kuryr-cni","logLevel":"loud"}`,
	`{"type":"kuryr-cni","socketPath":5}`,
	`{"cniVersion":`,
	`null`,
	`[]`,
	``,
}

// netConfFields mirrors the fields LoadNetConf checks, decoded on their own, to tell independently
// of LoadNetConf what is wrong with a configuration.
type netConfFields struct {
	Type           string `json:"type"`
	SocketPath     string `json:"socketPath"`
	TimeoutSeconds int    `json:"timeoutSeconds"`
	LogLevel       string `json:"logLevel"`
}

// violations names the fields of a decoded configuration that break a rule, after defaults.
func (f netConfFields) violations() []string {
	var bad []string
	if f.Type != "" && f.Type != "kuryr-cni" {
		bad = append(bad, "type")
	}
	if f.SocketPath != "" && !filepath.IsAbs(f.SocketPath) {
		bad = append(bad, "socketPath")
	}
	if f.TimeoutSeconds < 0 || time.Duration(f.TimeoutSeconds)*time.Second/time.Second != time.Duration(f.TimeoutSeconds) {
		bad = append(bad, "timeoutSeconds") // negative, or no deadline can express it
	}
	switch f.LogLevel {
	case "", "info", "debug":
	default:
		bad = append(bad, "logLevel")
	}
	return bad
}

// FuzzNetConf: LoadNetConf never panics; a rejected configuration gets an error that names the
// field at fault (or the JSON error); an accepted one has every field the plugin relies on set
// and valid, and survives a JSON round trip unchanged.
func FuzzNetConf(f *testing.F) {
	for _, s := range netConfSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := LoadNetConf(data)
		var fields netConfFields
		jsonErr := json.Unmarshal(data, &fields)
		bad := fields.violations()
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid kuryr-cni network configuration: ") || len(msg) <= len("invalid kuryr-cni network configuration: ") {
				t.Fatalf("error %q does not say what was wrong", msg)
			}
			if jsonErr != nil || len(bad) == 0 {
				// Only the JSON itself can be at fault: the error is the decoder's.
				if conf != nil {
					t.Fatalf("LoadNetConf returned both a configuration and error %q", msg)
				}
				return
			}
			named := false
			for _, field := range bad {
				named = named || strings.Contains(msg, field)
			}
			if !named {
				t.Fatalf("error %q names none of the bad fields %v", msg, bad)
			}
			return
		}
		if jsonErr != nil {
			t.Fatalf("LoadNetConf accepted %q, which does not decode: %v", data, jsonErr)
		}
		if len(bad) > 0 {
			t.Fatalf("LoadNetConf accepted %q with bad fields %v", data, bad)
		}
		if conf.Type != "" && conf.Type != "kuryr-cni" {
			t.Fatalf("accepted type %q", conf.Type)
		}
		if !filepath.IsAbs(conf.SocketPath) {
			t.Fatalf("accepted socket path %q, not absolute", conf.SocketPath)
		}
		if fields.SocketPath == "" && conf.SocketPath != DefaultSocketPath {
			t.Fatalf("no socketPath given, got %q, want the default %q", conf.SocketPath, DefaultSocketPath)
		}
		wantTimeout := DefaultTimeout
		if conf.TimeoutSeconds > 0 {
			wantTimeout = time.Duration(conf.TimeoutSeconds) * time.Second
		}
		if got := conf.Timeout(); got <= 0 || got != wantTimeout {
			t.Fatalf("timeoutSeconds %d gives deadline %v, want %v (positive)", conf.TimeoutSeconds, got, wantTimeout)
		}

		out, err := json.Marshal(conf)
		if err != nil {
			t.Fatalf("marshal an accepted configuration: %v", err)
		}
		back, err := LoadNetConf(out)
		if err != nil {
			t.Fatalf("the marshalled configuration %s is refused: %v", out, err)
		}
		if back.SocketPath != conf.SocketPath || back.TimeoutSeconds != conf.TimeoutSeconds || back.LogFile != conf.LogFile ||
			back.LogLevel != conf.LogLevel || back.Type != conf.Type || back.Name != conf.Name || back.CNIVersion != conf.CNIVersion {
			t.Fatalf("round trip through %s changed the configuration:\n got %+v\nwant %+v", out, back, conf)
		}
		again, err := json.Marshal(back)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("marshalling is not stable: %s then %s (%v)", out, again, err)
		}
	})
}

// FuzzCNIArgs: ParseK8sArgs never panics; a CNI_ARGS string of well-formed K=V pairs is accepted,
// with the last value of each K8S_POD_* key; anything else is refused with an error quoting it.
func FuzzCNIArgs(f *testing.F) {
	for _, s := range []string{
		// containerd and CRI-O
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-7db6d8ff4d-x2p9k;K8S_POD_INFRA_CONTAINER_ID=5f2c0b1e9a7d;K8S_POD_UID=0b3c6a1e-2f4d-4c5b-9e8a-1d2c3b4a5f6e",
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IgnoreUnknown=true",
		// cnitool and the demo
		"K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p1",
		"IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=p",
		"IgnoreUnknown=0;FOO=bar",
		"IgnoreUnknown=maybe",
		"K8S_POD_NAME",
		"K8S_POD_NAME=a=b",
		"K8S_POD_NAME=;K8S_POD_NAME=second",
		";",
		"CommonArgs=x",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		pod, err := ParseK8sArgs(args)
		want, wantErr := parseArgsModel(args)
		if err != nil {
			if wantErr == "" {
				t.Fatalf("ParseK8sArgs(%q) refused well-formed arguments: %v", args, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "invalid CNI_ARGS ") || !strings.Contains(msg, wantErr) {
				t.Fatalf("ParseK8sArgs(%q) error %q, want it to name CNI_ARGS and %q", args, msg, wantErr)
			}
			return
		}
		if wantErr != "" {
			t.Fatalf("ParseK8sArgs(%q) accepted it; want an error about %q", args, wantErr)
		}
		if pod != want {
			t.Fatalf("ParseK8sArgs(%q) = %+v, want %+v", args, pod, want)
		}
		// What the agent parsed is what a runtime would send for that pod.
		canon := "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + pod.Namespace + ";K8S_POD_NAME=" + pod.Name + ";K8S_POD_UID=" + pod.UID
		if again, err := ParseK8sArgs(canon); err != nil || again != pod {
			t.Fatalf("ParseK8sArgs(%q) = %+v, %v; want %+v", canon, again, err, pod)
		}
	})
}

// parseArgsModel is the CNI_ARGS grammar written out plainly: pairs separated by ';', each exactly
// one '='; IgnoreUnknown a boolean; unknown keys refused unless IgnoreUnknown is set. It returns
// the pod or the part of the error message that must name what was wrong.
func parseArgsModel(args string) (PodRef, string) {
	var pod PodRef
	if args == "" {
		return pod, ""
	}
	ignore, unknown := true, false // ParseK8sArgs starts from IgnoreUnknown=true
	for _, pair := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || strings.Contains(v, "=") {
			return PodRef{}, "invalid pair"
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			pod.Namespace = v
		case "K8S_POD_NAME":
			pod.Name = v
		case "K8S_POD_UID":
			pod.UID = v
		case "K8S_POD_INFRA_CONTAINER_ID":
		case "IgnoreUnknown":
			switch strings.ToLower(v) {
			case "1", "true":
				ignore = true
			case "0", "false":
				ignore = false
			default:
				return PodRef{}, "invalid input"
			}
		case "CommonArgs":
			return PodRef{}, "CommonArgs"
		default:
			unknown = true
		}
	}
	if unknown && !ignore {
		return PodRef{}, "unknown args"
	}
	return pod, ""
}
