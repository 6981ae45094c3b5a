/*
 * alert-ticket-bridge: the loop back from ServiceNow (push).
 *
 * Business Rule
 *   Name:        alert-ticket-bridge sync
 *   Table:       Incident [incident]
 *   When:        after            Update: checked   (Insert, Delete, Query: unchecked)
 *   Advanced:    checked
 *   Condition:   current.correlation_display == 'alert-ticket-bridge'
 *                (the desk's `correlation_display`; only tickets the bridge opened are sent)
 *   Script:      this file
 *
 * It calls the REST message "alert-ticket-bridge" (rest_message.json), method "desk event", which
 * POSTs the JSON below to https://<bridge>/desk-events/<desk name> with the bridge's bearer token.
 * Every update is sent, the bridge's own too: the bridge recognises its integration user
 * (sys_updated_by) and the "[alert-ticket-bridge]" marker in its work notes, and drops them.
 *
 * Body (all values strings, as the Table API shows them; times UTC "YYYY-MM-DD HH:MM:SS"):
 *   table, sys_id, number, url,
 *   state, previous_state, assigned_to, previous_assigned_to   (sys_user sys_ids, "" when none)
 *   sys_updated_on, sys_updated_by, sys_mod_count, correlation_id, correlation_display,
 *   journal: the comment or work note this update added, or null:
 *            {sys_id, element ("comments" | "work_notes"), value, sys_created_by, sys_created_on}
 *
 * executeAsync() sends it from the ECC queue: the user's save never waits for the bridge. A failed
 * call is not retried by the platform; the bridge's poll (`sync: {poll: 60s}`) catches up.
 */
(function executeRule(current, previous /*null when async*/) {
    function journalEntry() {
        if (!current.comments.changes() && !current.work_notes.changes())
            return null;
        var entry = new GlideRecord('sys_journal_field');
        entry.addQuery('name', current.getTableName());
        entry.addQuery('element_id', current.getUniqueValue());
        entry.addQuery('element', 'IN', 'comments,work_notes');
        entry.orderByDesc('sys_created_on');
        entry.setLimit(1);
        entry.query();
        if (!entry.next())
            return null;
        return {
            sys_id: entry.getUniqueValue(),
            element: entry.getValue('element'),
            value: entry.getValue('value'),
            sys_created_by: entry.getValue('sys_created_by'),
            sys_created_on: entry.getValue('sys_created_on')
        };
    }

    var body = {
        table: current.getTableName(),
        sys_id: current.getUniqueValue(),
        number: current.getValue('number'),
        url: gs.getProperty('glide.servlet.uri') + 'nav_to.do?uri=' + current.getTableName() +
            '.do?sys_id=' + current.getUniqueValue(),
        state: current.getValue('state'),
        previous_state: previous ? previous.getValue('state') : '',
        assigned_to: current.getValue('assigned_to') || '',
        previous_assigned_to: previous ? (previous.getValue('assigned_to') || '') : '',
        sys_updated_on: current.getValue('sys_updated_on'),
        sys_updated_by: current.getValue('sys_updated_by'),
        sys_mod_count: current.getValue('sys_mod_count'),
        correlation_id: current.getValue('correlation_id') || '',
        correlation_display: current.getValue('correlation_display') || '',
        journal: journalEntry()
    };

    try {
        var message = new sn_ws.RESTMessageV2('alert-ticket-bridge', 'desk event');
        message.setRequestBody(JSON.stringify(body));
        message.executeAsync();
    } catch (e) {
        gs.error('alert-ticket-bridge sync: ' + e.message);
    }
})(current, previous);
