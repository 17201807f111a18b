-- Issue 16: a Merkle tree belongs to one table, not to its name. relid already records the
-- table's OID; rel_owner records its owner when the tree was built, so a diff can refuse a tree
-- whose table was dropped and re-created, or changed hands, since (the tree would describe
-- another table's rows, or rows another owner's trust built).
ALTER TABLE ace.mtrees ADD COLUMN rel_owner oid;
UPDATE ace.mtrees m SET rel_owner = c.relowner FROM pg_class c WHERE c.oid = m.relid;
