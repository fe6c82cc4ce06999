package neutron

import (
	"context"
	"fmt"
	"net/url"
)

// DefaultSecurityGroup returns the ID of the project's "default" security group: what Neutron gives
// a port created without security groups, so that a pool configured with none groups its ports
// under the set they really have.
func (c *Client) DefaultSecurityGroup(ctx context.Context, project string) (string, error) {
	var resp struct {
		SecurityGroups []struct {
			ID        string `json:"id"`
			Name      string `json:"name"`
			ProjectID string `json:"project_id"`
		} `json:"security_groups"`
	}
	const op = "security_groups.list"
	q := url.Values{"name": {"default"}, "project_id": {project}}
	if _, err := c.sc.Get(withOp(ctx, op), c.sc.ServiceURL("security-groups")+"?"+q.Encode(), &resp, nil); err != nil {
		return "", fmt.Errorf("find the default security group of project %s: %w", project, apiError(op, err))
	}
	for _, g := range resp.SecurityGroups {
		if g.Name == "default" && g.ProjectID == project {
			return g.ID, nil
		}
	}
	return "", fmt.Errorf("project %s has no default security group", project)
}
