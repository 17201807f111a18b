package shim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"
)

// verifier checks client certificates in the handler rather than in the TLS handshake, so a
// rejected client gets a 401 with a JSON reason instead of a bare handshake failure. (The
// handshake still refuses a client that sends no certificate at all: see Server.tls.)
type verifier struct {
	roots   *x509.CertPool
	crl     *x509.RevocationList // nil: no CRL configured
	allowed []string             // empty: every CN the CA signed
	now     func() time.Time
}

func newVerifier(cfg Config) (*verifier, error) {
	roots, cas, err := loadCAs(cfg.ClientCAFile)
	if err != nil {
		return nil, err
	}
	v := &verifier{roots: roots, allowed: cfg.AllowedCNs, now: time.Now}
	if cfg.CRLFile != "" {
		if v.crl, err = loadCRL(cfg.CRLFile, cas); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func loadCAs(path string) (*x509.CertPool, []*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read client CA bundle: %w", err)
	}
	var cas []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("read client CA bundle %s: %w", path, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, nil, fmt.Errorf("client CA bundle %s holds no PEM certificate", path)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return pool, cas, nil
}

// loadCRL reads a PEM or DER CRL and checks that one of the client CAs signed it: a CRL nobody
// trusted could otherwise lock everyone out.
func loadCRL(path string, cas []*x509.Certificate) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	if block, _ := pem.Decode(b); block != nil {
		b = block.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("read CRL %s: %w", path, err)
	}
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return crl, nil
		}
	}
	return nil, fmt.Errorf("CRL %s is not signed by a CA of the client CA bundle", path)
}

// clientCN returns the verified client certificate's common name, or why it is refused.
func (v *verifier) clientCN(state *tls.ConnectionState) (string, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return "", errors.New("a client certificate is required")
	}
	leaf, now := state.PeerCertificates[0], v.now()
	switch {
	case now.Before(leaf.NotBefore):
		return "", fmt.Errorf("client certificate %q is not valid before %s", leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return "", fmt.Errorf("client certificate %q expired at %s", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return "", fmt.Errorf("client certificate %q is not signed by a trusted CA: %w", leaf.Subject.CommonName, err)
	}
	if err := v.checkCRL(leaf, now); err != nil {
		return "", err
	}
	if n := commonNames(leaf); n > 1 {
		// Go takes the last CN and PostgreSQL's cert authentication the first: with two, the
		// shim would check one role and log in as another.
		return "", fmt.Errorf("the client certificate's subject %q has %d common names (CN); it must have exactly one, the role", leaf.Subject.String(), n)
	}
	cn := leaf.Subject.CommonName
	switch {
	case cn == "":
		return "", errors.New("the client certificate has no common name (CN), which names the role")
	case len(v.allowed) > 0 && !slices.Contains(v.allowed, cn):
		return "", fmt.Errorf("CN %q is not in ACE_SHIM_ALLOWED_CNS", cn)
	}
	return cn, nil
}

// oidCommonName is the X.520 commonName attribute (2.5.4.3).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// commonNames counts the CN attributes of the certificate's subject.
func commonNames(c *x509.Certificate) int {
	n := 0
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			n++
		}
	}
	return n
}

func (v *verifier) checkCRL(leaf *x509.Certificate, now time.Time) error {
	if v.crl == nil {
		return nil
	}
	// A stale CRL may miss revocations made since: refusing everyone is the only safe answer.
	if !v.crl.NextUpdate.IsZero() && now.After(v.crl.NextUpdate) {
		return fmt.Errorf("the certificate revocation list is out of date (its NextUpdate was %s): no client is accepted until ACE_SHIM_CRL is renewed",
			v.crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	for _, e := range v.crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			return fmt.Errorf("client certificate %q (serial %s) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
		}
	}
	return nil
}

type cnKey struct{}

// authenticate lets through only requests with an acceptable client certificate, and puts its
// CN in the request's context.
func (v *verifier) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, err := v.clientCN(r.TLS)
		if err != nil {
			stopReading(w)
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), cnKey{}, cn)))
	})
}

func callerCN(r *http.Request) string {
	cn, _ := r.Context().Value(cnKey{}).(string)
	return cn
}
