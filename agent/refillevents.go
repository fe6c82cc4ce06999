package agent

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// Reasons of the agent's Events on its Node when a pool cannot be refilled.
const (
	ReasonQuotaExceeded    = "NeutronQuotaExceeded"
	ReasonVLANIDsExhausted = "VLANIDsExhausted"
	ReasonRefillFailed     = "PortRefillFailed"
)

// refillFailureReason names what stops a refill, for operators' alerts and `kubectl get events`.
func refillFailureReason(err error) string {
	switch {
	case errors.Is(err, neutron.ErrOverQuota):
		return ReasonQuotaExceeded
	case errors.Is(err, neutron.ErrNoFreeVLAN):
		return ReasonVLANIDsExhausted
	}
	return ReasonRefillFailed
}

// NodeEvent records a Kubernetes Event on this agent's Node (asynchronous; repeats are
// aggregated by the recorder's correlator, so a refill failing every tick does not flood the API).
func (n *KubeNotifier) NodeEvent(eventType, reason, message string) {
	if !n.events {
		return
	}
	// Node Events are keyed by the node's name, as the kubelet's are.
	ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.node, UID: types.UID(n.node)}
	n.recorder.Event(ref, eventType, reason, message)
}

// RefillFailed is pool.DriverOptions.OnRefillError: an Event on the Node naming the pool and why.
func (n *KubeNotifier) RefillFailed(key pool.Key, err error) {
	n.NodeEvent(corev1.EventTypeWarning, refillFailureReason(err), fmt.Sprintf("pool %s cannot be refilled: %v", key, err))
}
