-- The SQL API of Merkle trees: ace.mtree_build, ace.mtree_diff, ace.mtree_teardown (each a task;
-- build and diff with their CALL forms), ace.mtree_status, and what the agents use to keep the
-- trees fresh.

-- The guardrails of a tree's leaf size.
CREATE OR REPLACE FUNCTION ace.mtree_leaf_rows_range() RETURNS int[]
LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[100, 1000000] $$;

-- Raises unless the table can be tracked through a publication by the current user: PostgreSQL
-- lets only the table's owner publish it, and a table whose replica identity is NOTHING would
-- have its UPDATEs and DELETEs refused once it is published.
CREATE OR REPLACE FUNCTION ace.check_trackable(tbl text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    owner name;
    ident "char";
BEGIN
    SELECT c.relowner::regrole::name, c.relreplident INTO owner, ident FROM pg_class c WHERE c.oid = tbl::regclass;
    IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied: only the owner of % (role %) can start tracking its changes', tbl, owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Change tracking publishes the table, which PostgreSQL allows only its owner. Run mtree_build as %I or as a member of it.', owner);
    END IF;
    IF NOT has_database_privilege(current_user, current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'permission denied: role % cannot create publications in database %, which change tracking needs', current_user, current_database()
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT CREATE ON DATABASE %I TO %I; on every node, or build as a role that has it.', current_database(), current_user);
    END IF;
    IF ident = 'n' THEN
        RAISE EXCEPTION 'table % has REPLICA IDENTITY NOTHING: publishing it would make PostgreSQL refuse its UPDATEs and DELETEs', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT; on every node, then build again.', tbl);
    END IF;
END $$;

-- Raises unless the current user sees every row and every column of the table. A Merkle tree
-- is shared by every user of the table: its leaves are written by whoever builds or refreshes
-- it, so what a view restricted by row-level security or column privileges computed must never
-- get into it.
CREATE OR REPLACE FUNCTION ace.check_full_view(tbl text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel regclass := tbl::regclass;
    hidden text;
    why text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO hidden
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND NOT has_column_privilege(rel, a.attnum, 'SELECT');
    IF row_security_active(rel) THEN
        why := 'row-level security filters its rows for that role';
    ELSIF hidden IS NOT NULL THEN
        why := format('that role may not read the column(s) %s', hidden);
    ELSE
        RETURN;
    END IF;
    RAISE EXCEPTION 'permission denied: on this node, role % does not see every row of % (%); a Merkle tree is shared by every user of the table, so its leaves must cover every row', current_user, tbl, why
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'A tree built or refreshed at a restricted view would make later diffs by anyone miss differences.',
              HINT = format('Compare at your own view with SELECT ace.table_diff(%L); or have a role that sees every row of the table (its owner, unless FORCE ROW LEVEL SECURITY applies) run the Merkle tree task.', tbl);
END $$;

-- Raises unless this node has a ready tree of the table and it is the tree of the table with
-- OID relid (the table as the submitter resolved it) and of its present owner. It returns
-- nothing: the tree's row (who built it, by which task) is the agents' business.
CREATE OR REPLACE FUNCTION ace.check_mtree_ready(tbl text, relid oid) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    t record;
BEGIN
    SELECT m.status, m.error, m.relid, m.rel_owner INTO t FROM ace.mtrees m WHERE m.table_name = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'there is no Merkle tree of %', tbl
            USING ERRCODE = 'undefined_object',
                  HINT = format('Build one first: SELECT ace.mtree_build(%L); or compare without a tree: SELECT ace.table_diff(%L);', tbl, tbl);
    END IF;
    -- The table's identity first: a tree of a table dropped since is failed by its agent too,
    -- and this says why.
    IF t.relid IS DISTINCT FROM check_mtree_ready.relid
       OR t.rel_owner IS DISTINCT FROM (SELECT c.relowner FROM pg_class c WHERE c.oid = check_mtree_ready.relid) THEN
        RAISE EXCEPTION 'the Merkle tree of % was built for a table that has since been dropped and re-created (or changed owner); build it again with ace.mtree_build(%)', tbl, quote_literal(tbl)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Build it again: SELECT ace.mtree_build(%L);', tbl);
    END IF;
    IF t.status <> 'ready' THEN
        RAISE EXCEPTION 'the Merkle tree of % is %, not ready%', tbl, t.status, coalesce(': ' || t.error, '')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Build it again: SELECT ace.mtree_build(%L);', tbl);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ace.validate_mtree_build(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    tbl text := ace.resolve_table(args->>'table_name');
    bounds int[] := ace.mtree_leaf_rows_range();
BEGIN
    PERFORM ace.check_trackable(tbl);
    PERFORM ace.check_full_view(tbl);
    PERFORM ace.check_range(args, 'leaf_rows', bounds[1], bounds[2]);
    PERFORM ace.check_positive(args, 'leaf_rows');
    RETURN jsonb_strip_nulls(args || jsonb_build_object(
        'table_name', tbl,
        'leaf_rows', coalesce((args->>'leaf_rows')::int, 250),
        'nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args)))));
END $$;

-- A Merkle tree diff takes the table-diff options that apply to it (the tree decides the ranges,
-- so block_size does not) and how long to wait for every node's stream to catch up.
CREATE OR REPLACE FUNCTION ace.validate_mtree_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    timeout interval;
BEGIN
    IF args ? 'block_size' OR args ? 'override_block_size' THEN
        RAISE EXCEPTION 'block_size does not apply to a Merkle tree diff: the tree''s leaves are its ranges'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Rebuild the tree with another leaf_rows to change them.';
    END IF;
    BEGIN
        timeout := coalesce(ace.text_arg(args, 'cdc_timeout'), '60 seconds')::interval;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid cdc_timeout "%"', args->>'cdc_timeout'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give an interval such as ''30 seconds''.';
    END;
    IF timeout <= '0'::interval THEN
        RAISE EXCEPTION 'cdc_timeout must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ace.check_cdc_timeout(timeout);
    args := ace.validate_table_diff(args - 'cdc_timeout');
    PERFORM ace.check_full_view(args->>'table_name');
    PERFORM ace.check_mtree_ready(args->>'table_name', (args->>'table_name')::regclass::oid);
    RETURN args || jsonb_build_object('cdc_timeout', extract(epoch FROM timeout));
END $$;

-- Tearing down needs no table that still exists: the tree of a dropped table can go too.
CREATE OR REPLACE FUNCTION ace.validate_mtree_teardown(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    tbl text := ace.text_arg(args, 'table_name');
BEGIN
    IF tbl IS NOT NULL THEN
        IF to_regclass(tbl) IS NOT NULL THEN
            tbl := ace.resolve_table(tbl);
        ELSIF NOT ace.mtree_exists(tbl) THEN
            RAISE EXCEPTION 'there is no Merkle tree of %', tbl USING ERRCODE = 'undefined_object';
        END IF;
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'table_name', tbl,
        'nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args)))));
END $$;

-- Raises unless the current user may tear down the tree of tbl: its builder, the owner of the
-- table (relid, 0 when gone) and the owner of the ace schema may, and their members. Tearing
-- down does not need the builder's publication: it is left to her if the user may not drop it.
CREATE OR REPLACE FUNCTION ace.check_mtree_teardown(tbl text, builder text, relid oid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    builder_role oid := CASE WHEN builder <> '' THEN to_regrole(quote_ident(builder)) END;
    table_owner oid := (SELECT c.relowner FROM pg_class c WHERE c.oid = relid);
    ace_owner oid := (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'ace');
BEGIN
    IF coalesce(pg_has_role(current_user, builder_role, 'USAGE'), false)
       OR coalesce(pg_has_role(current_user, table_owner, 'USAGE'), false)
       OR pg_has_role(current_user, ace_owner, 'USAGE') THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'permission denied: % may not tear down the Merkle tree of %: only its builder (%), the owner of the table (%) or the owner of the ace schema (%) may, or a member of one of them',
            current_user, tbl, coalesce(nullif(builder, ''), 'unknown'), coalesce(table_owner::regrole::text, 'the table is gone'), ace_owner::regrole
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Run the teardown as one of them, or GRANT one of those roles to the role that runs it.';
END $$;

CREATE OR REPLACE FUNCTION ace.mtree_exists(tbl text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT EXISTS (SELECT 1 FROM ace.mtrees WHERE table_name = tbl)
$$;

CREATE OR REPLACE FUNCTION ace.mtree_build(table_name text, nodes text[] DEFAULT NULL, leaf_rows int DEFAULT 250)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('mtree-build', jsonb_strip_nulls(jsonb_build_object('table_name', table_name, 'nodes', nodes, 'leaf_rows', leaf_rows)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION ace.mtree_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    against_origin text DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    output text DEFAULT NULL,
    recheck_after interval DEFAULT NULL,
    cdc_timeout interval DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('mtree-diff', jsonb_strip_nulls(jsonb_build_object(
        'table_name', table_name, 'nodes', nodes, 'table_filter', table_filter, 'max_diff_rows', max_diff_rows,
        'compare_unit_size', compare_unit_size, 'concurrency_factor', concurrency_factor,
        'max_connections', max_connections, 'against_origin', against_origin, 'until', until, 'output', output,
        'recheck_after', recheck_after::text, 'cdc_timeout', cdc_timeout::text)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION ace.mtree_teardown(table_name text DEFAULT NULL, nodes text[] DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('mtree-teardown', jsonb_strip_nulls(jsonb_build_object('table_name', table_name, 'nodes', nodes)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE PROCEDURE ace.run_mtree_build(
    table_name text,
    nodes text[] DEFAULT NULL,
    leaf_rows int DEFAULT 250,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.mtree_build(table_name, nodes, leaf_rows);
    RAISE NOTICE 'submitted mtree-build task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
END $$;

CREATE OR REPLACE PROCEDURE ace.run_mtree_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    against_origin text DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    output text DEFAULT NULL,
    recheck_after interval DEFAULT NULL,
    cdc_timeout interval DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.mtree_diff(table_name, nodes, table_filter, max_diff_rows, compare_unit_size, concurrency_factor,
                              max_connections, against_origin, until, output, recheck_after, cdc_timeout);
    RAISE NOTICE 'submitted mtree-diff task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
    differing_rows := (summary->>'differing_keys')::bigint;
END $$;

-- Converts a 32-bit transaction id from the change stream into its xid8: the epoch is the
-- current one unless the id is ahead of the next id, which means it was assigned before the
-- last wraparound. Committed transactions are never ahead of the next id otherwise.
CREATE OR REPLACE FUNCTION ace.xid8_of(xid bigint) RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT (CASE WHEN xid <= (nxt & 4294967295) THEN (nxt >> 32 << 32) | xid
                 ELSE greatest((nxt >> 32) - 1, 0) << 32 | xid END)::text::xid8
    FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS nxt) s
$$;

-- What a change's transaction is recorded as: '0' once every snapshot sees it (nearly always:
-- it committed before the stream delivered it), else its xid8, which a refresh tests against
-- its own snapshot.
CREATE OR REPLACE FUNCTION ace.change_xid(xid bigint) RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN pg_visible_in_snapshot(x, pg_current_snapshot()) THEN '0'::xid8 ELSE x END
    FROM (SELECT ace.xid8_of(xid) AS x) s
$$;

-- What changed in a tree's publication since the tree was built, or NULL if nothing did. The
-- publication belongs to the tree's builder, who can alter it at any time; one that no longer
-- sends every change of the table (fewer operations, a row filter, another column list, another
-- owner, other tables, or any change of its catalog rows, even one undone since) could have hidden
-- changes from the tree, and a diff would then call differing rows in sync. The agents call it
-- when they reconcile their streams and before every tree diff.
CREATE OR REPLACE FUNCTION ace.mtree_publication_problem(t ace.mtrees) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM pg_class x WHERE x.oid = t.relid) THEN
            format('table %s was dropped (or dropped and re-created: a table of that name now is another one)', t.table_name)
        WHEN p.oid IS NULL THEN format('publication %I no longer exists', t.publication)
        WHEN t.pub_owner IS DISTINCT FROM p.pubowner THEN
            format('publication %I now belongs to %s, not to %s who built the tree', t.publication, p.pubowner::regrole,
                   coalesce(t.pub_owner::regrole::text, 'the role'))
        WHEN NOT (p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate) THEN
            format('publication %I no longer publishes every insert, update, delete and truncate (publish = %L)', t.publication,
                   concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                             CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END))
        WHEN NOT p.pubviaroot THEN format('publication %I no longer publishes through the partition root', t.publication)
        WHEN p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_namespace n WHERE n.pnpubid = p.oid)
             OR EXISTS (SELECT 1 FROM pg_publication_rel o WHERE o.prpubid = p.oid AND o.prrelid <> t.relid) THEN
            format('publication %I now publishes other tables too', t.publication)
        WHEN r.oid IS NULL THEN format('publication %I no longer publishes %s', t.publication, t.table_name)
        WHEN r.prqual IS NOT NULL THEN
            format('publication %I has a row filter (WHERE %s), which hides changes from the tree', t.publication,
                   pg_get_expr(r.prqual, r.prrelid))
        WHEN c.cols IS DISTINCT FROM t.pub_columns THEN
            format('publication %I publishes the columns %s, not %s as when the tree was built', t.publication,
                   coalesce(array_to_string(c.cols, ', '), 'all'), coalesce(array_to_string(t.pub_columns, ', '), 'all'))
        WHEN p.xmin::text IS DISTINCT FROM coalesce(t.pub_xmin, p.xmin)::text
             OR r.xmin::text IS DISTINCT FROM coalesce(t.pubrel_xmin, r.xmin)::text THEN
            format('publication %I was altered after the tree was built, which may have hidden changes from it meanwhile', t.publication)
    END
    FROM (SELECT 1) one
    LEFT JOIN pg_publication p ON p.pubname = t.publication
    LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = t.relid
    LEFT JOIN LATERAL (SELECT array_agg(a.attname::text ORDER BY a.attnum) AS cols FROM pg_attribute a
                       WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)) c ON true
$$;

-- Trees recorded without a stream group (by a release with one slot for every tree, or by its
-- agent during an upgrade) join the group of their publication's owner, with the publication's
-- catalog rows taken as they are now; a tree whose publication is gone keeps none and fails.
-- The agent calls it before it reconciles its streams; returns how many trees it adopted.
CREATE OR REPLACE FUNCTION ace.mtree_adopt_trees() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog AS $$
    WITH adopted AS (
        UPDATE ace.mtrees m
        SET pub_owner = p.pubowner,
            slot_name = format('ace_mtree_%s_%s', d.oid, p.pubowner),
            pub_xmin = p.xmin,
            pubrel_xmin = (SELECT r.xmin FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = m.relid),
            pub_columns = (SELECT array_agg(a.attname::text ORDER BY a.attnum)
                           FROM pg_publication_rel r JOIN pg_attribute a ON a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)
                           WHERE r.prpubid = p.oid AND r.prrelid = m.relid)
        FROM pg_publication p, pg_database d
        WHERE m.slot_name IS NULL AND p.pubname = m.publication AND d.datname = current_database()
        RETURNING 1)
    SELECT count(*) FROM adopted
$$;
-- Both are the agents' own: the check reads catalogs anyone can read, and adopting writes trees.
REVOKE EXECUTE ON FUNCTION ace.mtree_publication_problem(ace.mtrees), ace.mtree_adopt_trees() FROM PUBLIC;

-- This node's trees and their streams (each tree's own: the stream of its publication's owner),
-- live; warning says what needs doing, a failed tree's error first. Readable by every role
-- through this function only: it shows counts and positions, never keys.
CREATE OR REPLACE FUNCTION ace.mtree_local_status(table_name text DEFAULT NULL)
RETURNS TABLE (
    table_name text, status text, leaves bigint, row_count bigint, largest_leaf_rows bigint, dirty_leaves bigint,
    pending_changes bigint, leaf_rows int, built_at timestamptz, refreshed_at timestamptz, hash_version int,
    slot_name text, slot_status text, confirmed_lsn pg_lsn, lag_bytes numeric, retained_wal_bytes numeric,
    safe_wal_bytes bigint, heartbeat_at timestamptz, stream_error text, warning text, leaf_summary text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT m.table_name, m.status, l.leaves, l.row_count, l.largest, d.dirty, p.pending, m.leaf_rows, m.built_at,
           m.refreshed_at, m.hash_version, s.slot_name, r.wal_status, s.confirmed_lsn,
           pg_current_wal_insert_lsn() - s.confirmed_lsn, pg_current_wal_insert_lsn() - r.restart_lsn, r.safe_wal_size,
           s.heartbeat_at, s.last_error,
           CASE WHEN m.status = 'failed' THEN 'the tree failed: ' || coalesce(m.error, 'no reason recorded') || coalesce(' (stream: ' || s.last_error || ')', '')
                WHEN s.last_error IS NOT NULL THEN 'the change stream reports an error: ' || s.last_error
                WHEN s.slot_name IS NULL OR r.slot_name IS NULL THEN 'no change stream: the slot is missing; build the tree again'
                WHEN r.wal_status = 'lost' THEN 'the slot was invalidated (max_slot_wal_keep_size): build the tree again'
                WHEN r.wal_status = 'unreserved' THEN 'the slot is about to lose WAL it needs: is the agent running?'
                WHEN s.heartbeat_at < now() - interval '1 minute' THEN 'the agent''s stream has not reported for over a minute'
                WHEN pg_current_wal_insert_lsn() - r.restart_lsn > 1073741824 THEN 'the slot retains over 1 GB of WAL'
           END,
           m.leaf_summary
    FROM ace.mtrees m
    LEFT JOIN LATERAL (SELECT count(*) AS leaves, coalesce(sum(x.row_count), 0)::bigint AS row_count,
                              max(x.row_count) AS largest FROM ace.mtree_leaves x WHERE x.tree_id = m.tree_id) l ON true
    LEFT JOIN LATERAL (SELECT count(DISTINCT x.leaf_id) AS dirty FROM ace.mtree_dirty x WHERE x.tree_id = m.tree_id) d ON true
    LEFT JOIN LATERAL (SELECT count(*) AS pending FROM ace.mtree_pending x WHERE x.tree_id = m.tree_id) p ON true
    LEFT JOIN ace.cdc_state s ON s.slot_name = m.slot_name
    LEFT JOIN pg_replication_slots r ON r.slot_name = s.slot_name
    WHERE mtree_local_status.table_name IS NULL OR m.table_name = mtree_local_status.table_name
$$;

-- Every node's trees and streams as this node's agent last collected them (each heartbeat). The
-- row counts and the change activity of a table are shown only to roles that may read it on this
-- node (NULL to others); the status and the warnings to everyone. The view reads the agents'
-- tables as its owner, while its privilege tests run as the querying role.
CREATE OR REPLACE VIEW ace.mtree_status_rows AS
    SELECT s.table_name, s.node_name, j.status,
           CASE WHEN r.readable THEN j.leaves END AS leaves,
           CASE WHEN r.readable THEN j.row_count END AS row_count,
           CASE WHEN r.readable THEN j.largest_leaf_rows END AS largest_leaf_rows,
           CASE WHEN r.readable THEN j.dirty_leaves END AS dirty_leaves,
           CASE WHEN r.readable THEN j.pending_changes END AS pending_changes,
           j.leaf_rows, j.confirmed_lsn, j.lag_bytes, j.retained_wal_bytes, j.safe_wal_bytes,
           j.slot_status, j.heartbeat_at, j.built_at, j.hash_version,
           coalesce(s.status->>'error', j.warning) AS warning, s.reported_at, j.leaf_summary
    FROM ace.mtree_node_status s
    CROSS JOIN LATERAL jsonb_to_record(s.status) AS j(status text, leaves bigint, row_count bigint, largest_leaf_rows bigint,
        dirty_leaves bigint, pending_changes bigint, leaf_rows int, confirmed_lsn pg_lsn, lag_bytes numeric,
        retained_wal_bytes numeric, safe_wal_bytes bigint, slot_status text, heartbeat_at timestamptz,
        built_at timestamptz, hash_version int, warning text, leaf_summary text)
    -- The table as this node's tree recorded it, by OID: resolving the name could raise for a
    -- schema the role may not use, and a table dropped since has no privileges to test. The
    -- agents (the ace schema's owner, who write the trees) see every count.
    CROSS JOIN LATERAL (SELECT pg_catalog.pg_has_role((SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'ace'), 'MEMBER')
                               OR coalesce((SELECT pg_catalog.has_schema_privilege(c.relnamespace, 'USAGE')
                                                   AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
                                            FROM ace.mtrees m JOIN pg_catalog.pg_class c ON c.oid = m.relid
                                            WHERE m.table_name = s.table_name), false) AS readable) r;
GRANT SELECT ON ace.mtree_status_rows TO PUBLIC;

CREATE OR REPLACE FUNCTION ace.mtree_status(table_name text DEFAULT NULL)
RETURNS TABLE (
    table_name text, node_name text, status text, leaves bigint, row_count bigint, largest_leaf_rows bigint,
    dirty_leaves bigint, pending_changes bigint, leaf_rows int, confirmed_lsn pg_lsn, lag_bytes numeric,
    retained_wal_bytes numeric, safe_wal_bytes bigint, slot_status text, heartbeat_at timestamptz,
    built_at timestamptz, hash_version int, warning text, reported_at timestamptz, leaf_summary text)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT s.* FROM ace.mtree_status_rows s
    WHERE mtree_status.table_name IS NULL OR s.table_name = mtree_status.table_name
    ORDER BY s.table_name, s.node_name
$$;
