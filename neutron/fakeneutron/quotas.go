package fakeneutron

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// routeQuotas is PUT /v2.0/quotas/{project} with {"quota": {"port": N}}: the port quota of a
// project (-1: unlimited), which bulk creations then respect all or none, as Neutron's DbQuotaDriver
// does. Other resources are accepted and ignored.
func (s *Server) routeQuotas(q *request) (int, any, error) {
	if q.r.Method != http.MethodPut || len(q.parts) != 2 {
		return 0, nil, notFound("HTTPNotFound", "The resource could not be found.")
	}
	var b map[string]any
	if err := decode(q.body, "quota", &b); err != nil {
		return 0, nil, err
	}
	project := q.parts[1]
	if v, ok := b["port"]; ok {
		n, ok := v.(float64)
		if !ok {
			return 0, nil, errf(http.StatusBadRequest, "HTTPBadRequest", "Invalid input for port. Reason: %v is not an integer.", v)
		}
		if n < 0 {
			delete(s.portQuota, project)
		} else {
			s.portQuota[project] = int(n)
		}
	}
	port := -1
	if n, ok := s.portQuota[project]; ok {
		port = n
	}
	return http.StatusOK, map[string]any{"quota": map[string]any{"port": port}}, nil
}

// overPortQuota is the error of a creation of n ports that would exceed project's port quota.
func (s *Server) overPortQuota(project string, n int) error {
	limit, ok := s.portQuota[project]
	if !ok {
		return nil
	}
	used := 0
	for _, p := range s.ports {
		if p.project == project {
			used++
		}
	}
	if used+n <= limit {
		return nil
	}
	return errf(http.StatusConflict, "OverQuota", "Quota exceeded for resources: ['port'] (limit %s).", strconv.Itoa(limit))
}

// SetPortQuota sets the port quota of project on the Neutron at endpoint (this stand-in or the
// real server, noauth) through the quotas API; -1 is unlimited. For tests.
func SetPortQuota(ctx context.Context, endpoint, project string, n int) error {
	body := strings.NewReader(fmt.Sprintf(`{"quota": {"port": %d}}`, n))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(endpoint, "/")+"/v2.0/quotas/"+project, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Project-Id", project)
	req.Header.Set("X-Roles", "admin")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("set the port quota of %s: %w", project, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("set the port quota of %s: %s %s", project, resp.Status, b)
	}
	return nil
}
