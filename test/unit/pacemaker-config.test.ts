// The Pacemaker testbed's pure pieces (scripts/pacemaker.ts): the corosync configuration it
// writes, and its reading of crm_mon's XML (the e2e test waits on it, so a wrong reading would
// make a wait pass or hang for the wrong reason). The sample is crm_mon 2.1.5's own output,
// trimmed, from a run of test/e2e/pacemaker.test.ts after the takeover.
import { describe, expect, it } from 'vitest';
import { corosyncConfig, parseCrmMon } from '../../scripts/pacemaker.js';

const afterTakeover = `<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="true" version="2.1.5-a3f44794f94" name="backup" id="2" with_quorum="true" mixed_version="false"/>
  </summary>
  <nodes>
    <node name="backup" id="2" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="3.16.1" shutdown="false" expected_up="true" is_dc="true" resources_running="2" type="member"/>
    <node name="primary" id="1" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="3.16.1" shutdown="false" expected_up="true" is_dc="false" resources_running="2" type="member"/>
  </nodes>
  <resources>
    <clone id="t2cp-clone" multi_state="true" unique="false" maintenance="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="t2cp" resource_agent="ocf:t2cp:t2cp" role="Promoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="backup" id="2" cached="true"/>
      </resource>
      <resource id="t2cp" resource_agent="ocf:t2cp:t2cp" role="Unpromoted" active="true" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="1">
        <node name="primary" id="1" cached="true"/>
      </resource>
    </clone>
    <resource id="primary-vip" resource_agent="ocf:heartbeat:IPaddr2" role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
    <clone id="gateway-ping-clone" multi_state="false" unique="false" maintenance="false" managed="true" disabled="false" failed="false" failure_ignored="false">
      <resource id="gateway-ping" resource_agent="ocf:pacemaker:ping" role="Started" active="true" orphaned="false" blocked="false" managed="true" failed="true" failure_ignored="false" nodes_running_on="1">
        <node name="primary" id="1" cached="true"/>
      </resource>
    </clone>
  </resources>
  <node_attributes>
    <node name="backup">
      <attribute name="master-t2cp" value="1000"/>
    </node>
  </node_attributes>
</pacemaker-result>`;

describe('Pacemaker testbed configuration', () => {
  it('reads crm_mon: the DC, the online nodes, each resource\'s role per node, failures marked, stopped ones absent', () => {
    expect(parseCrmMon(afterTakeover)).toEqual({
      dc: 'backup',
      online: ['backup', 'primary'],
      roles: { t2cp: { backup: 'Promoted', primary: 'Unpromoted' }, 'gateway-ping': { primary: 'Started failed' } },
    });
    const offline = afterTakeover.replace('name="primary" id="1" online="true"', 'name="primary" id="1" online="false"').replace('present="true"', 'present="false"');
    expect(parseCrmMon(offline)).toMatchObject({ dc: null, online: ['backup'] });
  });

  it('writes a two-node knet corosync.conf with the token asked, and refuses what corosync or two_node would not take', () => {
    const nodes = [{ name: 'primary', ns: 'x', addr: '198.18.1.2' }, { name: 'backup', ns: 'y', addr: '198.18.1.3' }];
    const conf = corosyncConfig('t2cp-ab12', nodes, 1000);
    expect(conf).toMatch(/transport: knet\n\s+token: 1000\n/);
    expect(conf).toMatch(/ring0_addr: 198\.18\.1\.2\n\s+name: primary\n\s+nodeid: 1\n/);
    expect(conf).toMatch(/ring0_addr: 198\.18\.1\.3\n\s+name: backup\n\s+nodeid: 2\n/);
    expect(conf).toMatch(/two_node: 1\n/);
    // corosync's parser wants one item a line: never "node { ring0_addr: ..." on one line.
    expect(conf.split('\n').every((l) => !/\{\s*\S/.test(l))).toBe(true);
    expect(() => corosyncConfig('t2cp', nodes.slice(0, 1), 1000)).toThrow(/exactly two/);
    expect(() => corosyncConfig('t2cp', nodes, 50)).toThrow(/token/);
    expect(() => corosyncConfig('T2 cp', nodes, 1000)).toThrow(/cluster name/);
    expect(() => corosyncConfig('t2cp', [nodes[0]!, { ...nodes[1]!, name: 'bad name' }], 1000)).toThrow(/node name/);
  });
});
