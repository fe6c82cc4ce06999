// Package kuryrnet is kuryr's KuryrNetwork custom resource (openstack.org/v1) in Go: the types,
// their conversion from and to the unstructured objects of client-go's dynamic client, a small
// typed client, an informer whose store holds typed objects, and the pre-population protocol
// between the controller (which sets status.populated) and the agents (which fill their pools).
// There is no code generation: the CRD is small and stable, and its schema is
// daemonset/crd-kuryrnetwork.yaml.
package kuryrnet

import (
	"fmt"
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The CRD's names, as in kuryr-kubernetes.
const (
	Group    = "openstack.org"
	Version  = "v1"
	Kind     = "KuryrNetwork"
	ListKind = "KuryrNetworkList"
	Resource = "kuryrnetworks"
	// Finalizer keeps a KuryrNetwork until the controller has deleted its Neutron network, subnet
	// and router interface.
	Finalizer = "kuryrnetwork.finalizers.kuryr.openstack.org"
)

var (
	// GroupVersion is openstack.org/v1.
	GroupVersion = schema.GroupVersion{Group: Group, Version: Version}
	// GVR is the resource the dynamic client addresses.
	GVR = GroupVersion.WithResource(Resource)
	// GVK is the kind of a KuryrNetwork.
	GVK = GroupVersion.WithKind(Kind)
)

// KuryrNetwork records the Neutron network and subnet of one namespace
// ([kubernetes] pod_subnets_driver = namespace). It is named after its namespace and lives in it.
type KuryrNetwork struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   Spec   `json:"spec"`
	Status Status `json:"status,omitempty"`
}

// Spec is what the namespace asks for. All three fields are required by the CRD.
type Spec struct {
	NsName    string            `json:"nsName"`
	ProjectID string            `json:"projectId"`
	NsLabels  map[string]string `json:"nsLabels"`
}

// Status is what the controller created in Neutron.
type Status struct {
	NetID      string `json:"netId,omitempty"`
	SubnetID   string `json:"subnetId,omitempty"`
	SubnetCIDR string `json:"subnetCIDR,omitempty"`
	RouterID   string `json:"routerId,omitempty"`
	// Populated tells the agents to pre-populate their pools for this subnet (see Populate).
	Populated bool              `json:"populated"`
	NsLabels  map[string]string `json:"nsLabels,omitempty"`
}

// New returns the KuryrNetwork of a namespace, with the finalizer and a non-nil nsLabels (the CRD
// requires the field).
func New(namespace, projectID string, labels map[string]string) *KuryrNetwork {
	l := maps.Clone(labels)
	if l == nil {
		l = map[string]string{}
	}
	return &KuryrNetwork{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: Kind},
		ObjectMeta: metav1.ObjectMeta{Name: namespace, Namespace: namespace, Finalizers: []string{Finalizer}},
		Spec:       Spec{NsName: namespace, ProjectID: projectID, NsLabels: l},
	}
}

// HasFinalizer reports whether the controller's finalizer is on the object.
func (k *KuryrNetwork) HasFinalizer() bool {
	for _, f := range k.Finalizers {
		if f == Finalizer {
			return true
		}
	}
	return false
}

// Ready reports whether the subnet exists and is recorded: agents may use it for pods.
func (k *KuryrNetwork) Ready() bool {
	return k.DeletionTimestamp == nil && k.Status.NetID != "" && k.Status.SubnetID != ""
}

// DeepCopyInto copies k into out.
func (k *KuryrNetwork) DeepCopyInto(out *KuryrNetwork) {
	*out = *k
	out.TypeMeta = k.TypeMeta
	k.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec.NsLabels = maps.Clone(k.Spec.NsLabels)
	out.Status.NsLabels = maps.Clone(k.Status.NsLabels)
}

// DeepCopy returns a copy of k that shares nothing with it.
func (k *KuryrNetwork) DeepCopy() *KuryrNetwork {
	if k == nil {
		return nil
	}
	out := new(KuryrNetwork)
	k.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (k *KuryrNetwork) DeepCopyObject() runtime.Object { return k.DeepCopy() }

// FromUnstructured converts an object of the dynamic client.
func FromUnstructured(u *unstructured.Unstructured) (*KuryrNetwork, error) {
	if gvk := u.GroupVersionKind(); gvk != GVK {
		return nil, fmt.Errorf("%s/%s is a %s, not a %s", u.GetNamespace(), u.GetName(), gvk, GVK)
	}
	k := &KuryrNetwork{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, k); err != nil {
		return nil, fmt.Errorf("decode KuryrNetwork %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return k, nil
}

// ToUnstructured converts k for the dynamic client.
func ToUnstructured(k *KuryrNetwork) (*unstructured.Unstructured, error) {
	c := k.DeepCopy()
	if c.Spec.NsLabels == nil {
		c.Spec.NsLabels = map[string]string{}
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		return nil, fmt.Errorf("encode KuryrNetwork %s/%s: %w", k.Namespace, k.Name, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(GVK)
	return u, nil
}
