package cni

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultTimeout bounds every call to the agent. It must exceed the agent's [cni_daemon]
// pool_wait_timeout so that the agent, not the plugin, decides when an empty pool means "try again".
const DefaultTimeout = 90 * time.Second

// maxTimeoutSeconds is the longest timeoutSeconds a time.Duration holds.
const maxTimeoutSeconds = int64(math.MaxInt64 / time.Second)

// NetConf is the kuryr-cni entry of a CNI network configuration list.
type NetConf struct {
	types.NetConf

	// SocketPath is the agent's CNI socket; default DefaultSocketPath.
	SocketPath string `json:"socketPath,omitempty"`
	// TimeoutSeconds bounds every call to the agent; default DefaultTimeout.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// LogFile receives the plugin's log lines; empty means stderr. Never stdout: it carries the result.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is "debug" or "info" (default).
	LogLevel string `json:"logLevel,omitempty"`
}

// MarshalJSON writes the kuryr-cni fields too: without it types.NetConf's MarshalJSON is promoted
// and silently drops socketPath, timeoutSeconds, logFile and logLevel.
func (c *NetConf) MarshalJSON() ([]byte, error) {
	type plain NetConf // a non-addressable value of it is encoded field by field
	data, err := json.Marshal(plain(*c))
	if err != nil || !c.DNS.IsEmpty() {
		return data, err
	}
	// Like types.NetConf, leave out an empty "dns".
	obj := map[string]json.RawMessage{}
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	delete(obj, "dns")
	return json.Marshal(obj)
}

// Timeout is the deadline for one call to the agent.
func (c *NetConf) Timeout() time.Duration {
	if c.TimeoutSeconds > 0 {
		return time.Duration(c.TimeoutSeconds) * time.Second
	}
	return DefaultTimeout
}

// LoadNetConf parses and validates the configuration kuryr-cni got on stdin, applying defaults.
func LoadNetConf(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: %w", err)
	}
	if conf.Type != "" && conf.Type != "kuryr-cni" {
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: type is %q, want \"kuryr-cni\"", conf.Type)
	}
	if conf.SocketPath == "" {
		conf.SocketPath = DefaultSocketPath
	}
	if !filepath.IsAbs(conf.SocketPath) {
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: socketPath %q is not an absolute path", conf.SocketPath)
	}
	if conf.TimeoutSeconds < 0 {
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: timeoutSeconds %d is negative", conf.TimeoutSeconds)
	}
	if int64(conf.TimeoutSeconds) > maxTimeoutSeconds {
		// It would overflow time.Duration into a deadline in the past: every call would time out.
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: timeoutSeconds %d is over %d", conf.TimeoutSeconds, maxTimeoutSeconds)
	}
	switch conf.LogLevel {
	case "", "info", "debug":
	default:
		return nil, fmt.Errorf("invalid kuryr-cni network configuration: logLevel %q is not \"info\" or \"debug\"", conf.LogLevel)
	}
	return conf, nil
}

// K8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,staticcheck // names fixed by the runtimes
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,staticcheck
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,staticcheck
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,staticcheck
}

// PodRef names the pod an attachment belongs to.
type PodRef struct {
	Namespace, Name, UID string
}

// ParseK8sArgs extracts the pod from CNI_ARGS; unknown keys are ignored, as runtimes send many.
func ParseK8sArgs(args string) (PodRef, error) {
	a := K8sArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(args, &a); err != nil {
		return PodRef{}, fmt.Errorf("invalid CNI_ARGS %q: %w", args, err)
	}
	return PodRef{
		Namespace: string(a.K8S_POD_NAMESPACE),
		Name:      string(a.K8S_POD_NAME),
		UID:       string(a.K8S_POD_UID),
	}, nil
}
