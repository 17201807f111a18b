// Package pgtls makes the certificates of a local cluster that authenticates with certificates
// instead of trust: one certificate authority, a server certificate for 127.0.0.1, and client
// certificates whose common name is the identity PostgreSQL's cert authentication sees (a role,
// or an agent that pg_ident.conf maps onto roles). Keys are ECDSA P-256, made at run time.
package pgtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Authority is a certificate authority whose files live in Dir: ca.crt, server.crt/key, and
// <name>.crt/key for each client.
type Authority struct {
	Dir string

	mu   sync.Mutex
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// New creates an authority and a server certificate for 127.0.0.1 in dir.
func New(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create certificate directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make CA key: %w", err)
	}
	tmpl := template("ace-agent local CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	a := &Authority{Dir: dir, cert: cert, key: key}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writePEM(a.CAFile(), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, "ca.key"), "EC PRIVATE KEY", keyDER); err != nil {
		return nil, err
	}
	server := template("127.0.0.1")
	server.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	server.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if _, _, err := a.issue("server", server); err != nil {
		return nil, err
	}
	return a, nil
}

// Open loads the authority that New made in dir.
func Open(dir string) (*Authority, error) {
	certDER, err := readPEM(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	return &Authority{Dir: dir, cert: cert, key: key}, nil
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate authority: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("read certificate authority: %s holds no PEM block", path)
	}
	return block.Bytes, nil
}

// CAFile is the authority's certificate, for ssl_ca_file and sslrootcert.
func (a *Authority) CAFile() string { return filepath.Join(a.Dir, "ca.crt") }

// ServerFiles are the server certificate and key, for ssl_cert_file and ssl_key_file.
func (a *Authority) ServerFiles() (cert, key string) {
	return filepath.Join(a.Dir, "server.crt"), filepath.Join(a.Dir, "server.key")
}

// Client returns the certificate and key files of a client whose common name is cn, making them
// the first time.
func (a *Authority) Client(cn string) (cert, key string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cert, key = filepath.Join(a.Dir, cn+".crt"), filepath.Join(a.Dir, cn+".key")
	if _, err := os.Stat(cert); err == nil {
		return cert, key, nil
	}
	tmpl := template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return a.issue(cn, tmpl)
}

// issue signs tmpl with a new key and writes name.crt and name.key (mode 0600, as libpq wants).
func (a *Authority) issue(name string, tmpl *x509.Certificate) (cert, key string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("make key for %s: %w", name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &k.PublicKey, a.key)
	if err != nil {
		return "", "", fmt.Errorf("make certificate for %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(a.Dir, name+".crt"), filepath.Join(a.Dir, name+".key")
	if err := writePEM(cert, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return cert, key, writePEM(key, "EC PRIVATE KEY", keyDER)
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func writePEM(path, kind string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ClientValidity returns the certificate and key files of a client whose common name is cn and
// which is valid only from notBefore to notAfter, written as name.crt and name.key: for tests of
// expired and not-yet-valid certificates, which Client never makes.
func (a *Authority) ClientValidity(name, cn string, notBefore, notAfter time.Time) (cert, key string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tmpl := template(cn)
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return a.issue(name, tmpl)
}

// WriteCRL writes, to path, a PEM certificate revocation list signed by the authority that
// revokes the certificates in the given files and is current from thisUpdate to nextUpdate.
func (a *Authority) WriteCRL(path string, thisUpdate, nextUpdate time.Time, revokedCertFiles ...string) error {
	var revoked []x509.RevocationListEntry
	for _, f := range revokedCertFiles {
		der, err := readPEM(f)
		if err != nil {
			return err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
		RevokedCertificateEntries: revoked,
	}, a.cert, a.key)
	if err != nil {
		return fmt.Errorf("make certificate revocation list: %w", err)
	}
	return writePEM(path, "X509 CRL", der)
}
