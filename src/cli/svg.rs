//! Pictures, as SVG files (plotters' SVG backend, no system library): the
//! address-space map and the plot of a simulation.

use super::map::{AddressMap, short_of_name};
use hostmem::host::{MemoryAvailable, MemoryCriticalLevel};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const RESERVED: RGBColor = RGBColor(226, 226, 226);
const MAPPED: RGBColor = RGBColor(196, 178, 140);
const GRID: RGBColor = RGBColor(150, 150, 150);
const COMMITTED: RGBColor = RGBColor(31, 119, 180);
const COUNTED: RGBColor = RGBColor(140, 190, 230);
const RESERVED_LINE: RGBColor = RGBColor(118, 42, 131);
const TASK: RGBColor = RGBColor(255, 127, 14);
const APP_DOMAIN: RGBColor = RGBColor(214, 39, 40);
const PROCESS: RGBColor = RGBColor(110, 0, 0);
const LOW: RGBColor = RGBColor(214, 39, 40);
const NEUTRAL: RGBColor = RGBColor(230, 171, 2);
const HIGH: RGBColor = RGBColor(44, 160, 44);

/// The colour of committed pages of a protection (`RW`, `RX`, …).
fn protection_colour(short: &str) -> RGBColor {
    match short {
        "RW" => RGBColor(66, 133, 244),
        "RX" => RGBColor(255, 140, 0),
        "RWX" => RGBColor(219, 40, 40),
        "R" => RGBColor(15, 157, 88),
        "X" => RGBColor(156, 39, 176),
        "NA" => RGBColor(50, 50, 50),
        _ => RGBColor(0, 0, 0),
    }
}

fn err(path: &Path) -> impl Fn(String) -> String + '_ {
    move |e| format!("{}: cannot draw: {e}", path.display())
}

const MAX_ROWS: usize = 160;

/// Draws `map` to `path`: one bar a reservation (each bar its own scale,
/// its size in the label), reserved pages grey, committed pages coloured
/// by protection; the runtime's own mappings in tan.
pub fn map_svg(map: &AddressMap, title: &str, path: &Path) -> Result<(), String> {
    enum Row<'a> {
        Reservation(&'a super::map::MapReservation),
        Mapping(&'a super::map::MapMapping),
    }
    let mut rows: Vec<(u64, Row)> = map
        .reservations
        .iter()
        .map(|r| (r.base, Row::Reservation(r)))
        .chain(map.mappings.iter().map(|m| (m.base, Row::Mapping(m))))
        .collect();
    rows.sort_by_key(|(base, _)| *base);
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);

    let (width, row_h, top, label_w) = (1200i32, 20i32, 84i32, 470i32);
    let height = top + row_h * rows.len().max(1) as i32 + 40;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let e = err(path);
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let font = |size: u32| ("sans-serif", size).into_font();
    let mono = |size: u32| ("monospace", size).into_font();
    let text = |s: String, at: (i32, i32), style: TextStyle| {
        root.draw(&Text::new(s, at, style))
            .map_err(|x| e(x.to_string()))
    };
    text(title.to_owned(), (12, 10), font(20).into())?;
    text(
        format!(
            "{}, {} committed of {} reserved; {}",
            super::count(map.reservations.len() as u64, "reservation"),
            super::units::bytes(map.committed()),
            super::units::bytes(map.reserved()),
            super::count(map.mappings.len() as u64, "runtime mapping")
        ),
        (12, 36),
        font(13).color(&GRID),
    )?;
    // Legend.
    let mut x = 12;
    let legend = [
        ("reserved", RESERVED),
        ("PAGE_READWRITE", protection_colour("RW")),
        ("PAGE_EXECUTE_READ", protection_colour("RX")),
        ("PAGE_EXECUTE_READWRITE", protection_colour("RWX")),
        ("PAGE_READONLY", protection_colour("R")),
        ("PAGE_NOACCESS", protection_colour("NA")),
        ("runtime mapping", MAPPED),
    ];
    for (name, colour) in legend {
        root.draw(&Rectangle::new([(x, 58), (x + 14, 72)], colour.filled()))
            .map_err(|x| e(x.to_string()))?;
        text(name.to_owned(), (x + 18, 59), font(12).into())?;
        x += 26 + 7 * name.len() as i32;
    }
    let bar_x0 = label_w;
    let bar_w = width - bar_x0 - 16;
    for (i, (_, row)) in rows.iter().enumerate() {
        let y = top + i as i32 * row_h;
        let (name, base, size, owner) = match row {
            Row::Reservation(r) => (&r.name, r.base, r.size, &r.owner),
            Row::Mapping(m) => (&m.name, m.base, m.size, &m.owner),
        };
        // Columns at fixed places (SVG collapses runs of spaces).
        let right = TextStyle::from(mono(12)).pos(Pos::new(HPos::Right, VPos::Top));
        text(
            name.clone().unwrap_or_default(),
            (8, y + 4),
            mono(12).into(),
        )?;
        text(format!("{base:#x}"), (44, y + 4), mono(12).into())?;
        text(super::units::bytes(size), (234, y + 4), right)?;
        text(owner.clone(), (244, y + 4), font(12).into())?;
        let (y0, y1) = (y + 3, y + row_h - 3);
        let fill = match row {
            Row::Reservation(_) => RESERVED,
            Row::Mapping(_) => MAPPED,
        };
        root.draw(&Rectangle::new(
            [(bar_x0, y0), (bar_x0 + bar_w, y1)],
            fill.filled(),
        ))
        .map_err(|x| e(x.to_string()))?;
        if let Row::Reservation(r) = row {
            let at = |addr: u64| {
                bar_x0 + ((addr - r.base) as f64 / size.max(1) as f64 * bar_w as f64) as i32
            };
            for g in r.regions.iter().filter(|g| g.state == "MEM_COMMIT") {
                let (x0, x1) = (at(g.base), at(g.base + g.size));
                let colour = protection_colour(short_of_name(&g.protect));
                root.draw(&Rectangle::new(
                    [(x0, y0), (x1.max(x0 + 1), y1)],
                    colour.filled(),
                ))
                .map_err(|x| e(x.to_string()))?;
            }
        }
        root.draw(&Rectangle::new([(bar_x0, y0), (bar_x0 + bar_w, y1)], GRID))
            .map_err(|x| e(x.to_string()))?;
    }
    if hidden > 0 {
        let y = top + rows.len() as i32 * row_h + 6;
        text(
            format!("… {hidden} more rows not drawn"),
            (8, y),
            font(12).into(),
        )?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// What a simulation plot shows.
pub struct PlotData {
    /// The title.
    pub title: String,
    /// Samples: seconds, committed, reserved, counted against the budget
    /// (committed and the runtime's own mappings).
    pub samples: Vec<(f64, u64, u64, u64)>,
    /// The budget.
    pub budget: u64,
    /// The limit of each critical level, bytes.
    pub limits: [u64; 3],
    /// The high-memory threshold, bytes.
    pub high: u64,
    /// Notifications: seconds, state.
    pub notifications: Vec<(f64, MemoryAvailable)>,
    /// Refusals: seconds, level.
    pub refusals: Vec<(f64, MemoryCriticalLevel)>,
}

const MIB: f64 = (1u64 << 20) as f64;

/// The committed bytes the samples show at `t` (the last sample before).
fn counted_at(samples: &[(f64, u64, u64, u64)], t: f64) -> f64 {
    let i = samples.partition_point(|s| s.0 <= t);
    samples
        .get(i.saturating_sub(1))
        .map_or(0.0, |s| s.3 as f64 / MIB)
}

type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;
type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart of MiB over `0..t_end` seconds on `area`, its mesh drawn.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    t_end: f64,
    y_max: f64,
) -> Result<TimeChart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .caption(caption, ("sans-serif", 15))
        .build_cartesian_2d(0f64..t_end, 0f64..y_max)
        .map_err(|x| x.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|x| x.to_string())?;
    Ok(chart)
}

/// Draws the plot to `path`: above, committed bytes (and all bytes
/// counted against the budget) over time with the budget, the levels'
/// limits, the notifications as vertical lines and the refusals as
/// crosses; below, reserved bytes.
pub fn plot_svg(data: &PlotData, path: &Path) -> Result<(), String> {
    let e = err(path);
    let root = SVGBackend::new(path, (1200, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root
        .titled(&data.title, ("sans-serif", 20))
        .map_err(|x| e(x.to_string()))?;
    let (upper, lower) = root.split_vertically(540);
    let t_end = data
        .samples
        .last()
        .map_or(1.0, |s| s.0)
        .max(data.refusals.last().map_or(0.0, |r| r.0))
        .max(1e-3);
    let budget = data.budget as f64 / MIB;
    let peak = data
        .samples
        .iter()
        .map(|s| s.3.max(s.1) as f64 / MIB)
        .fold(0.0, f64::max);
    let y_max = budget.max(peak) * 1.12 + 1.0;

    let mut chart =
        time_chart(&upper, "committed memory against the budget", t_end, y_max).map_err(&e)?;
    let hline = |y: f64| vec![(0.0, y), (t_end, y)];
    chart
        .draw_series(LineSeries::new(hline(budget), BLACK.stroke_width(2)))
        .map_err(|x| e(x.to_string()))?
        .label(format!("budget {}", super::units::bytes(data.budget)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let limit_names = ["eTaskCritical limit", "eAppDomainCritical limit"];
    for (i, colour) in [TASK, APP_DOMAIN].into_iter().enumerate() {
        let y = data.limits[i] as f64 / MIB;
        if (y - budget).abs() > f64::EPSILON {
            chart
                .draw_series(DashedLineSeries::new(hline(y), 6, 4, colour.into()))
                .map_err(|x| e(x.to_string()))?
                .label(limit_names[i])
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    let high = data.high as f64 / MIB;
    chart
        .draw_series(DashedLineSeries::new(hline(high), 2, 4, HIGH.into()))
        .map_err(|x| e(x.to_string()))?
        .label("high-memory threshold")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], HIGH));
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.3 as f64 / MIB)),
            COUNTED.stroke_width(1),
        ))
        .map_err(|x| e(x.to_string()))?
        .label("counted (committed + runtime mappings)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COUNTED));
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.1 as f64 / MIB)),
            COMMITTED.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?
        .label("committed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COMMITTED.stroke_width(2)));
    // Notifications: a vertical line each, labelled.
    for (state, colour, name, label_y) in [
        (MemoryAvailable::Low, LOW, "Low", 0.995),
        (MemoryAvailable::Neutral, NEUTRAL, "Neutral", 0.965),
        (MemoryAvailable::High, HIGH, "High", 0.935),
    ] {
        let times: Vec<f64> = data
            .notifications
            .iter()
            .filter(|n| n.1 == state)
            .map(|n| n.0)
            .collect();
        if times.is_empty() {
            continue;
        }
        chart
            .draw_series(times.iter().map(|&t| {
                PathElement::new(
                    vec![(t, 0.0), (t, y_max * (label_y - 0.03))],
                    colour.mix(0.6),
                )
            }))
            .map_err(|x| e(x.to_string()))?
            .label(format!(
                "notification: eMemoryAvailable{name} ({})",
                times.len()
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], colour));
        chart
            .draw_series(times.iter().map(|&t| {
                Text::new(
                    name,
                    (t, y_max * label_y),
                    ("sans-serif", 10).into_font().color(&colour),
                )
            }))
            .map_err(|x| e(x.to_string()))?;
    }
    // Refusals: a cross each at the counted bytes of the moment (thinned
    // out evenly beyond 1,500 so the file stays small).
    for (level, colour, name) in [
        (MemoryCriticalLevel::TaskCritical, TASK, "eTaskCritical"),
        (
            MemoryCriticalLevel::AppDomainCritical,
            APP_DOMAIN,
            "eAppDomainCritical",
        ),
        (
            MemoryCriticalLevel::ProcessCritical,
            PROCESS,
            "eProcessCritical",
        ),
    ] {
        let times: Vec<f64> = data
            .refusals
            .iter()
            .filter(|r| r.1 == level)
            .map(|r| r.0)
            .collect();
        if times.is_empty() {
            continue;
        }
        let every = times.len().div_ceil(1500);
        chart
            .draw_series(
                times.iter().step_by(every).map(|&t| {
                    Cross::new((t, counted_at(&data.samples, t)), 4, colour.stroke_width(1))
                }),
            )
            .map_err(|x| e(x.to_string()))?
            .label(format!("refused at {name} ({})", times.len()))
            .legend(move |(x, y)| Cross::new((x + 10, y), 4, colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GRID)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|x| e(x.to_string()))?;

    let reserved_max = data
        .samples
        .iter()
        .map(|s| s.2 as f64 / MIB)
        .fold(0.0, f64::max)
        * 1.1
        + 1.0;
    let mut chart =
        time_chart(&lower, "reserved address space", t_end, reserved_max).map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            data.samples.iter().map(|s| (s.0, s.2 as f64 / MIB)),
            RESERVED_LINE.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
