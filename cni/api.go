// Package cni is the plugin side of kuryr: the network configuration kuryr-cni reads, the protocol
// it speaks with the node agent over a unix socket, and the CNI commands. kuryr-cni never talks to
// Neutron or Kubernetes: the agent does all of that.
package cni

import "encoding/json"

// The agent's CNI endpoints. The version in the path lets an old kuryr-cni binary on the host keep
// working with a newer agent during a rolling update.
const (
	PathAdd    = "/v1/cni/add"
	PathDel    = "/v1/cni/del"
	PathCheck  = "/v1/cni/check"
	PathGC     = "/v1/cni/gc"
	PathStatus = "/v1/cni/status"
)

// DefaultSocketPath is where the agent serves CNI requests ([cni_daemon] socket_path).
const DefaultSocketPath = "/run/kuryr/cni.sock"

// Request is what kuryr-cni sends for ADD, DEL, CHECK and GC: the CNI environment and the network
// configuration from stdin, verbatim. The agent parses CNI_ARGS (K8S_POD_*) itself.
type Request struct {
	ContainerID string          `json:"containerId,omitempty"`
	Netns       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifName,omitempty"`
	Args        string          `json:"args,omitempty"`
	Config      json.RawMessage `json:"config"`
}

// Answers other than 200 OK carry a CNI error object ({"code", "msg", "details"}) as their body;
// 200 OK carries the CNI result (ADD) or nothing.
