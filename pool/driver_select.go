package pool

import (
	"fmt"
	"strings"
)

// SelectDriver is kuryr's MultiVIFPool choice for a node: the node's pod VIF driver (its pod_vif
// label, or the annotation of that name as a fallback: the caller passes what it found) or, when
// the node names none, defaultPodVIF ([kubernetes] pod_vif_driver); then the pool driver mapping
// (config.PoolMapping) gives for it.
func SelectDriver(mapping map[string]string, nodePodVIF, defaultPodVIF string) (poolDriver string, podVIF string, err error) {
	podVIF = strings.TrimSpace(nodePodVIF)
	if podVIF == "" {
		podVIF = strings.TrimSpace(defaultPodVIF)
	}
	if podVIF == "" {
		return "", "", fmt.Errorf("the node has no pod_vif label and [kubernetes] pod_vif_driver is empty")
	}
	poolDriver, ok := mapping[podVIF]
	switch {
	case !ok && podVIF == strings.TrimSpace(nodePodVIF):
		return "", podVIF, fmt.Errorf("the node's pod_vif %q is not mapped to a pool driver by [vif_pool] vif_pool_mapping", podVIF)
	case !ok:
		return "", podVIF, fmt.Errorf("[kubernetes] pod_vif_driver %q is not mapped to a pool driver by [vif_pool] vif_pool_mapping", podVIF)
	case poolDriver == "":
		return "", podVIF, fmt.Errorf("pod VIF driver %q is mapped to an empty pool driver", podVIF)
	}
	return poolDriver, podVIF, nil
}
