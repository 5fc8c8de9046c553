import { Suspense } from 'react';
import { NavLink, Route, Routes } from 'react-router';
import { generation } from './addons';
import { lazyComponent, visibleRoutes } from './addonViews.ts';
import WidgetSlot from './WidgetSlot.tsx';

function Dashboard() {
  return (
    <main>
      <h1>Dashboard</h1>
      <WidgetSlot name="dashboard.cards" />
    </main>
  );
}

function NotFound() {
  return (
    <main>
      <h1>Not found</h1>
    </main>
  );
}

/** The panel: its own pages, one route per addon route, widget slots. */
export default function App() {
  const routes = visibleRoutes();
  return (
    <div className="panel">
      <nav>
        <NavLink to="/" end>
          Dashboard
        </NavLink>
        {routes.map(({ key, item }) => (
          <NavLink key={key} to={item.path}>
            {item.title}
          </NavLink>
        ))}
        <small title="addon index generation">addons #{generation}</small>
      </nav>
      <Suspense fallback={<p>Loading…</p>}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          {routes.map(({ key, item }) => {
            const Page = lazyComponent(item.component);
            return <Route key={key} path={item.path} element={<Page />} />;
          })}
          <Route path="*" element={<NotFound />} />
        </Routes>
      </Suspense>
      <WidgetSlot name="layout.bottom-right" />
    </div>
  );
}
