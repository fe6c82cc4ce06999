package kuryrnet

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Client reads and writes KuryrNetworks through the dynamic client. Errors from the API server
// are wrapped with %w, so apierrors.IsNotFound / IsConflict work on them.
type Client struct {
	ri           dynamic.NamespaceableResourceInterface
	fieldManager string
}

// NewClient returns a client whose writes carry fieldManager (e.g. "kuryr-controller").
func NewClient(dyn dynamic.Interface, fieldManager string) *Client {
	return &Client{ri: dyn.Resource(GVR), fieldManager: fieldManager}
}

// Get reads the KuryrNetwork namespace/name.
func (c *Client) Get(ctx context.Context, namespace, name string) (*KuryrNetwork, error) {
	u, err := c.ri.Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get KuryrNetwork %s/%s: %w", namespace, name, err)
	}
	return FromUnstructured(u)
}

// List returns the KuryrNetworks of a namespace ("" for all).
func (c *Client) List(ctx context.Context, namespace string) ([]*KuryrNetwork, error) {
	l, err := c.ri.Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list KuryrNetworks: %w", err)
	}
	out := make([]*KuryrNetwork, 0, len(l.Items))
	for i := range l.Items {
		k, err := FromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// Create creates k (its status is ignored: the CRD has a status subresource).
func (c *Client) Create(ctx context.Context, k *KuryrNetwork) (*KuryrNetwork, error) {
	return c.write(ctx, k, "create", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return c.ri.Namespace(k.Namespace).Create(ctx, u, metav1.CreateOptions{FieldManager: c.fieldManager})
	})
}

// Update writes k's metadata and spec; k.ResourceVersion makes it conditional (a stale k fails
// with a Conflict).
func (c *Client) Update(ctx context.Context, k *KuryrNetwork) (*KuryrNetwork, error) {
	return c.write(ctx, k, "update", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return c.ri.Namespace(k.Namespace).Update(ctx, u, metav1.UpdateOptions{FieldManager: c.fieldManager})
	})
}

// UpdateStatus writes k's status, conditionally on k.ResourceVersion.
func (c *Client) UpdateStatus(ctx context.Context, k *KuryrNetwork) (*KuryrNetwork, error) {
	return c.write(ctx, k, "update status of", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return c.ri.Namespace(k.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: c.fieldManager})
	})
}

func (c *Client) write(_ context.Context, k *KuryrNetwork, verb string, do func(*unstructured.Unstructured) (*unstructured.Unstructured, error)) (*KuryrNetwork, error) {
	u, err := ToUnstructured(k)
	if err != nil {
		return nil, err
	}
	out, err := do(u)
	if err != nil {
		return nil, fmt.Errorf("%s KuryrNetwork %s/%s: %w", verb, k.Namespace, k.Name, err)
	}
	return FromUnstructured(out)
}

// Delete deletes namespace/name. With uid set the deletion is conditional on it, so a KuryrNetwork
// recreated under the same name is not deleted by mistake.
func (c *Client) Delete(ctx context.Context, namespace, name string, uid types.UID) error {
	opts := metav1.DeleteOptions{}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	if err := c.ri.Namespace(namespace).Delete(ctx, name, opts); err != nil {
		return fmt.Errorf("delete KuryrNetwork %s/%s: %w", namespace, name, err)
	}
	return nil
}
